//! A bounded queue to a reader that may fall behind (a `doc.watch` or `topic.subscribe`
//! client), which never drops anything silently. While the queue is full, items are
//! counted instead of sent, and none are sent after that: the reader gets what was
//! queued, then one [`Item::Lagged`] with the count, then the end. It knows exactly what
//! it missed and that it must read the state again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

/// What a reader receives.
#[derive(Debug, PartialEq, Eq)]
pub enum Item<T> {
    Item(T),
    /// The reader fell behind and this many items were dropped; the stream ends here.
    Lagged(u64),
}

/// The writing side; cheap to keep per reader.
#[derive(Debug)]
pub struct Sender<T> {
    tx: mpsc::Sender<T>,
    dropped: Arc<AtomicU64>,
}

/// The reading side.
#[derive(Debug)]
pub struct Receiver<T> {
    rx: mpsc::Receiver<T>,
    dropped: Arc<AtomicU64>,
    done: bool,
}

/// A queue holding at most `capacity` items for its reader.
pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = mpsc::channel(capacity);
    let dropped = Arc::new(AtomicU64::new(0));
    (
        Sender {
            tx,
            dropped: dropped.clone(),
        },
        Receiver {
            rx,
            dropped,
            done: false,
        },
    )
}

impl<T> Sender<T> {
    /// Queues `item`, or counts it as dropped if the reader has fallen behind. False once
    /// the reader is gone: forget this sender.
    pub fn send(&self, item: T) -> bool {
        if self.tx.is_closed() {
            return false;
        }
        if self.dropped.load(Ordering::Acquire) > 0 {
            self.dropped.fetch_add(1, Ordering::AcqRel);
            return true;
        }
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::AcqRel);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// True once the reader is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// True while items are being dropped for this reader.
    pub fn lagging(&self) -> bool {
        self.dropped.load(Ordering::Acquire) > 0
    }
}

impl<T> Receiver<T> {
    /// The next item; after a lag, the count once everything queued has been read; then
    /// `None`.
    pub async fn recv(&mut self) -> Option<Item<T>> {
        if self.done {
            return None;
        }
        if self.rx.is_empty() && self.lagged_end() {
            return Some(Item::Lagged(self.dropped.load(Ordering::Acquire)));
        }
        match self.rx.recv().await {
            Some(item) => Some(Item::Item(item)),
            None if self.lagged_end() => Some(Item::Lagged(self.dropped.load(Ordering::Acquire))),
            None => None,
        }
    }

    /// Ends the stream if items were dropped: closing the queue stops the count.
    fn lagged_end(&mut self) -> bool {
        if self.dropped.load(Ordering::Acquire) == 0 {
            return false;
        }
        self.rx.close();
        self.done = true;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reader_that_falls_behind_gets_what_was_queued_then_the_exact_count() {
        let (tx, mut rx) = channel(4);
        for i in 0..10 {
            assert!(tx.send(i));
        }
        assert!(tx.lagging());
        let mut got = Vec::new();
        let mut dropped = None;
        while let Some(item) = rx.recv().await {
            match item {
                Item::Item(i) => got.push(i),
                Item::Lagged(n) => dropped = Some(n),
            }
        }
        assert_eq!(got, vec![0, 1, 2, 3]);
        assert_eq!(dropped, Some(6), "every item not delivered is counted");
        assert!(!tx.send(99), "the stream has ended");
    }

    #[tokio::test]
    async fn a_reader_that_keeps_up_gets_everything_and_no_lag() {
        let (tx, mut rx) = channel(4);
        for round in 0..5 {
            for i in 0..4 {
                assert!(tx.send(round * 4 + i));
            }
            for i in 0..4 {
                assert_eq!(rx.recv().await, Some(Item::Item(round * 4 + i)));
            }
        }
        drop(tx);
        assert_eq!(rx.recv().await, None);
    }
}
