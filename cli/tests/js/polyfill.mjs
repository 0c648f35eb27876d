// Node 20 lacks Promise.withResolvers (Node 22 has it); js-libp2p 3 calls it. This module is
// imported before libp2p, so the polyfill is in place when libp2p's modules evaluate.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve, reject
    const promise = new Promise((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}
