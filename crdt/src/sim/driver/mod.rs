//! The simulator's event loop: virtual time, simulated disks, crashes and delivery.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod disk;
mod report;

use super::byzantine::Byzantine;
use super::net::Net;
use super::workload::{Model, Workload, Write};
use super::{Report, SimConfig};
use crate::id::{ActorId, DocId};
use crate::sync::{Ack, Acl, Event, Input, Message, Output, Replica, SignedDelta, TestAuth};

/// How often each replica gets a [`Input::Tick`], and how often convergence is checked
/// once the faults are over.
const TICK_MS: u64 = 250;

#[derive(Debug)]
enum Ev {
    Deliver {
        to: usize,
        from: usize,
        epoch: u64,
        msg: Message,
    },
    PersistDone {
        node: usize,
        epoch: u64,
        ticket: u64,
    },
    Tick {
        node: usize,
    },
    Compact {
        node: usize,
    },
    Write {
        node: usize,
    },
    Crash {
        node: usize,
    },
    Restart {
        node: usize,
    },
    Partition,
    Heal,
    Check,
    /// A Byzantine author attacks.
    Attack {
        byzantine: usize,
    },
    /// A Byzantine author's message reaches an honest node.
    Inject {
        to: usize,
        from: ActorId,
        msg: Message,
    },
}

/// One simulated node: its replica (absent while crashed) and its disk.
struct Node {
    actor: ActorId,
    replica: Option<Replica>,
    /// Bumped by every crash, so messages and disk writes from before it are dropped.
    epoch: u64,
    /// Persist requests not yet on disk, in ticket order.
    writing: Vec<(u64, SignedDelta)>,
    last_write_done_ms: u64,
    /// Durable deltas by (author, first seq).
    disk: BTreeMap<(ActorId, u64), SignedDelta>,
    /// Tag of each write awaiting acknowledgement.
    in_flight: BTreeMap<u64, Write>,
    /// What its peers held, as last saved to its disk.
    acks: Vec<(ActorId, Ack)>,
    /// Its local writes' own deltas, by tag, until acknowledged.
    originals: BTreeMap<u64, SignedDelta>,
}

pub(super) struct Sim<'c> {
    cfg: &'c SimConfig,
    rng: ChaCha8Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    events: BTreeMap<usize, Ev>,
    next_ev: usize,
    doc: DocId,
    nodes: Vec<Node>,
    net: Net,
    workload: Workload,
    model: Model,
    report: Report,
    faults_over_ms: u64,
    converged_at: Option<u64>,
    byzantine: Vec<Byzantine>,
    /// Every acknowledged write's own delta: their join is the state without compaction.
    acknowledged: Vec<SignedDelta>,
}

impl<'c> Sim<'c> {
    pub(super) fn new(cfg: &'c SimConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let doc = DocId::derive(
            &ActorId::from_index(0),
            "sim",
            &cfg.seed
                .to_be_bytes()
                .repeat(2)
                .try_into()
                .unwrap_or([0; 16]),
        );
        let net = Net::new(cfg.nodes, cfg.degree, &mut rng);
        let nodes = (0..cfg.nodes)
            .map(|i| {
                let actor = ActorId::from_index(i as u64 + 1);
                let replica = Replica::new(
                    doc,
                    actor,
                    Arc::new(TestAuth),
                    cfg.replica.clone(),
                    cfg.seed ^ (i as u64) << 20,
                );
                Node {
                    actor,
                    replica: Some(replica),
                    epoch: 0,
                    writing: Vec::new(),
                    last_write_done_ms: 0,
                    disk: BTreeMap::new(),
                    in_flight: BTreeMap::new(),
                    acks: Vec::new(),
                    originals: BTreeMap::new(),
                }
            })
            .collect();
        let report = Report {
            nodes: cfg.nodes,
            seed: cfg.seed,
            converged: false,
            converge_ms: None,
            writes_attempted: 0,
            writes_acknowledged: 0,
            acknowledged_lost: 0,
            model_mismatches: Vec::new(),
            messages_sent: 0,
            messages_lost: 0,
            bytes_sent: cfg.measure_bytes.then_some(0),
            deltas_rejected: 0,
            attacks: 0,
            equivocations: 0,
            disk_failures: 0,
            folds: 0,
            log_bytes: 0,
            uncompacted_bytes: 0,
            state_bytes: 0,
            compaction_changed_state: false,
            crashes: 0,
            partitions: 0,
            virtual_ms: 0,
            digest: None,
        };
        Sim {
            cfg,
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            next_ev: 0,
            doc,
            nodes,
            net,
            workload: Workload::default(),
            model: Model::default(),
            report,
            faults_over_ms: 0,
            converged_at: None,
            byzantine: (0..cfg.byzantine)
                .map(|i| Byzantine::new(doc, ActorId::from_index((cfg.nodes + 1 + i) as u64)))
                .collect(),
            acknowledged: Vec::new(),
        }
    }

    fn schedule(&mut self, at: u64, ev: Ev) {
        let id = self.next_ev;
        self.next_ev += 1;
        self.seq += 1;
        self.events.insert(id, ev);
        self.queue.push(Reverse((at, self.seq, id)));
    }

    fn plan(&mut self) {
        self.connect_all();
        let phase = self.cfg.write_phase_ms.max(1);
        for node in 0..self.cfg.nodes {
            let jitter = self.rng.random_range(0..TICK_MS);
            self.schedule(jitter, Ev::Tick { node });
            if let Some(every) = self.cfg.compact_every_ms {
                let at = self.rng.random_range(0..every.max(1));
                self.schedule(at, Ev::Compact { node });
            }
        }
        if self.cfg.away_ms > 0 {
            let at = phase / 4;
            self.schedule(at, Ev::Crash { node: 0 });
            self.schedule(at + self.cfg.away_ms, Ev::Restart { node: 0 });
            self.faults_over_ms = self.faults_over_ms.max(at + self.cfg.away_ms);
        }
        for _ in 0..self.cfg.writes {
            let at = self.rng.random_range(0..phase);
            let node = self.rng.random_range(0..self.cfg.nodes);
            self.schedule(at, Ev::Write { node });
        }
        // Partitions take turns in equal slots of the write phase, never overlapping.
        let slots = self.cfg.partitions as u64;
        for k in 0..slots {
            let slot = phase / slots;
            let start = k * slot + self.rng.random_range(0..slot / 2 + 1);
            let end = start + self.rng.random_range(slot / 4..slot / 2 + 1).max(1);
            self.schedule(start, Ev::Partition);
            self.schedule(end, Ev::Heal);
            self.faults_over_ms = self.faults_over_ms.max(end);
        }
        if !self.byzantine.is_empty() {
            for _ in 0..self.cfg.attacks {
                let at = self.rng.random_range(0..phase);
                let byzantine = self.rng.random_range(0..self.byzantine.len());
                self.schedule(at, Ev::Attack { byzantine });
            }
        }
        // While node 0 is away (below), ordinary crashes leave it alone: their restart
        // would end its absence early.
        let first = usize::from(self.cfg.away_ms > 0 && self.cfg.nodes > 1);
        for _ in 0..self.cfg.crashes {
            let node = self.rng.random_range(first..self.cfg.nodes);
            let at = self.rng.random_range(0..phase);
            let back = at + self.rng.random_range(100..3_000);
            // A burst of writes just before the crash, some still on their way to disk.
            for before in [7, 3, 1] {
                self.schedule(at.saturating_sub(before), Ev::Write { node });
            }
            self.schedule(at, Ev::Crash { node });
            self.schedule(back, Ev::Restart { node });
            self.faults_over_ms = self.faults_over_ms.max(back);
        }
        self.faults_over_ms = self.faults_over_ms.max(phase);
        self.schedule(self.faults_over_ms, Ev::Check);
    }

    pub(super) fn run(mut self) -> Report {
        self.plan();
        let deadline = self.faults_over_ms + self.cfg.settle_limit_ms;
        while let Some(Reverse((at, _, id))) = self.queue.pop() {
            let lingered = self
                .converged_at
                .is_some_and(|c| at > c.saturating_add(self.cfg.linger_ms));
            if at > deadline || lingered {
                break;
            }
            self.now = at;
            let Some(ev) = self.events.remove(&id) else {
                continue;
            };
            self.step(ev);
        }
        self.finish()
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver {
                to,
                from,
                epoch,
                msg,
            } => {
                let node = &self.nodes[to];
                if node.epoch != epoch || node.replica.is_none() || !self.net.linked(from, to) {
                    self.report.messages_lost += 1;
                    return;
                }
                let relay = matches!(msg, Message::Delta(_)).then(|| msg.clone());
                let from_actor = self.nodes[from].actor;
                let applied = self.input(
                    to,
                    Input::Message {
                        from: from_actor,
                        msg,
                    },
                );
                // Gossip relays what it newly accepted, as gossipsub does after validation.
                if let (Some(m), true) = (relay, applied) {
                    self.send_to_peers(to, Some(from), m);
                }
            }
            Ev::PersistDone {
                node,
                epoch,
                ticket,
            } => self.persist_done(node, epoch, ticket),
            Ev::Tick { node } => {
                if self.nodes[node].replica.is_some() {
                    self.input(node, Input::Tick);
                }
                self.schedule(self.now + TICK_MS, Ev::Tick { node });
            }
            Ev::Compact { node } => {
                if let Some(r) = self.nodes[node].replica.as_ref() {
                    self.nodes[node].acks = r.acks().map(|(a, k)| (*a, k.clone())).collect();
                    self.input(node, Input::Compact);
                }
                if let Some(every) = self.cfg.compact_every_ms {
                    self.schedule(self.now + every, Ev::Compact { node });
                }
            }
            Ev::Write { node } => self.write(node),
            Ev::Crash { node } => self.crash(node),
            Ev::Restart { node } => self.restart(node),
            Ev::Partition => {
                self.report.partitions += 1;
                let down = self.net.partition(&mut self.rng);
                for (a, b) in down {
                    self.link_changed(a, b, false);
                }
            }
            Ev::Heal => {
                for (a, b) in self.net.heal() {
                    self.link_changed(a, b, true);
                }
            }
            Ev::Attack { byzantine } => self.attack(byzantine),
            Ev::Inject { to, from, msg } => {
                if self.nodes[to].replica.is_none() {
                    return;
                }
                let relay = msg.clone();
                if self.input(to, Input::Message { from, msg }) {
                    self.send_to_peers(to, None, relay);
                }
            }
            Ev::Check => {
                if self.converged_at.is_some() {
                    return;
                }
                if self.all_agree() {
                    self.converged_at = Some(self.now);
                } else {
                    self.schedule(self.now + TICK_MS, Ev::Check);
                }
            }
        }
    }
}

impl Sim<'_> {
    /// Feeds an input to a live node and carries out what it asks. Returns true if a
    /// remote delta was applied.
    fn input(&mut self, node: usize, input: Input) -> bool {
        let now = self.now;
        let write_tag = match &input {
            Input::Write { tag, .. } => Some(*tag),
            _ => None,
        };
        let Some(replica) = self.nodes[node].replica.as_mut() else {
            return false;
        };
        let folded = replica.stats().folded;
        if replica.handle(now, input).is_err() {
            self.report.deltas_rejected += 1;
        }
        let mut outputs = Vec::new();
        while let Some(o) = replica.poll_output() {
            outputs.push(o);
        }
        // A fold that replaced held entries is news too (the daemon relays it).
        let mut applied_remote = write_tag.is_none() && replica.stats().folded > folded;
        for o in outputs {
            match o {
                Output::Send { to, msg } => {
                    if let Some(to) = self.index_of(&to) {
                        self.send(node, to, msg);
                    }
                }
                Output::Broadcast(msg) => self.send_to_peers(node, None, msg),
                Output::Persist { ticket, delta } => {
                    let n = &mut self.nodes[node];
                    if let Some(tag) = write_tag {
                        n.originals.insert(tag, delta.clone());
                    }
                    n.writing.push((ticket, delta));
                    let done = n
                        .last_write_done_ms
                        .max(now + self.rng.random_range(1..=self.cfg.disk_latency_ms.max(1)));
                    n.last_write_done_ms = done;
                    let epoch = n.epoch;
                    self.schedule(
                        done,
                        Ev::PersistDone {
                            node,
                            epoch,
                            ticket,
                        },
                    );
                }
                Output::Event(Event::Acknowledged { tag, .. }) => {
                    if let Some(w) = self.nodes[node].in_flight.remove(&tag) {
                        self.model.acknowledge(&w);
                        self.report.writes_acknowledged += 1;
                    }
                    if let Some(d) = self.nodes[node].originals.remove(&tag) {
                        self.acknowledged.push(d);
                    }
                }
                Output::Event(Event::Applied { local, .. }) => applied_remote |= !local,
                // An author caught equivocating is cut: its later deltas leave the disk,
                // including those still on their way there.
                Output::Truncate { author, after } => {
                    let n = &mut self.nodes[node];
                    let keep = |d: &SignedDelta| d.author != author || d.seqs.last <= after;
                    n.disk.retain(|_, d| keep(d));
                    n.writing.retain(|(_, d)| keep(d));
                }
                // Refused: its client is told it failed; it must never become visible.
                Output::Event(Event::Refused { tag }) => {
                    if let Some(w) = self.nodes[node].in_flight.remove(&tag) {
                        self.model.refuse(&w);
                    }
                }
                Output::Event(Event::Truncated { .. } | Event::Equivocated { .. }) => {}
            }
        }
        applied_remote
    }

    /// One attack by Byzantine author `b`: its messages reach random honest nodes (the two
    /// versions of an equivocation reach two different ones).
    fn attack(&mut self, b: usize) {
        let honest: Vec<ActorId> = self.nodes.iter().map(|n| n.actor).collect();
        let (_, msgs) = self.byzantine[b].attack(self.now, &mut self.rng, &honest);
        self.report.attacks += 1;
        let from = self.byzantine[b].actor;
        let first = self.rng.random_range(0..self.nodes.len());
        for (i, msg) in msgs.into_iter().enumerate() {
            let to = (first + i) % self.nodes.len();
            let at = self.now + self.rng.random_range(1..=50);
            self.schedule(at, Ev::Inject { to, from, msg });
        }
    }

    fn index_of(&self, actor: &ActorId) -> Option<usize> {
        let n = u64::from_be_bytes(actor.0[..8].try_into().ok()?);
        let i = usize::try_from(n.checked_sub(1)?).ok()?;
        (i < self.nodes.len()).then_some(i)
    }

    fn send(&mut self, from: usize, to: usize, msg: Message) {
        self.report.messages_sent += 1;
        if let Some(b) = self.report.bytes_sent.as_mut() {
            *b += msg.encode().len() as u64;
        }
        if self.rng.random_bool(self.cfg.loss) {
            self.report.messages_lost += 1;
            return;
        }
        let epoch = self.nodes[to].epoch;
        let copies = if self.rng.random_bool(self.cfg.dup) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let at = self.now + self.rng.random_range(1..=50);
            self.schedule(
                at,
                Ev::Deliver {
                    to,
                    from,
                    epoch,
                    msg: msg.clone(),
                },
            );
        }
    }

    /// Live neighbours `node` can reach now.
    fn peers(&self, node: usize) -> Vec<usize> {
        self.net
            .neighbours(node)
            .iter()
            .copied()
            .filter(|&p| self.net.linked(node, p) && self.nodes[p].replica.is_some())
            .collect()
    }

    fn send_to_peers(&mut self, node: usize, except: Option<usize>, msg: Message) {
        for p in self.peers(node) {
            if Some(p) != except {
                self.send(node, p, msg.clone());
            }
        }
    }

    fn write(&mut self, node: usize) {
        if self.nodes[node].replica.is_none() {
            return;
        }
        let (w, op) = self.workload.next(node, &mut self.rng);
        let tag = w.id;
        self.nodes[node].in_flight.insert(tag, w);
        self.report.writes_attempted += 1;
        self.input(node, Input::Write { op, tag });
    }

    fn crash(&mut self, node: usize) {
        if self.nodes[node].replica.is_none() {
            return;
        }
        let peers = self.peers(node);
        let n = &mut self.nodes[node];
        n.replica = None;
        n.epoch += 1;
        n.writing.clear();
        n.in_flight.clear();
        n.originals.clear();
        self.report.crashes += 1;
        let actor = n.actor;
        for p in peers {
            self.input(p, Input::PeerDown(actor));
        }
    }

    fn restart(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        if n.replica.is_some() {
            return;
        }
        let seed = self.cfg.seed ^ ((node as u64) << 20) ^ (n.epoch << 40);
        let stored: Vec<SignedDelta> = n.disk.values().cloned().collect();
        n.replica = Some(
            Replica::restore(
                self.doc,
                n.actor,
                Arc::new(TestAuth),
                self.cfg.replica.clone(),
                seed,
                Acl::open(),
                stored,
            )
            .with_acks(n.acks.clone()),
        );
        for p in self.peers(node) {
            self.link_changed(node, p, true);
        }
    }

    /// Tells both ends that a link between live nodes came up or went down.
    fn link_changed(&mut self, a: usize, b: usize, up: bool) {
        if self.nodes[a].replica.is_none() || self.nodes[b].replica.is_none() {
            return;
        }
        let (actor_a, actor_b) = (self.nodes[a].actor, self.nodes[b].actor);
        let (to_a, to_b) = if up {
            (Input::PeerUp(actor_b), Input::PeerUp(actor_a))
        } else {
            (Input::PeerDown(actor_b), Input::PeerDown(actor_a))
        };
        self.input(a, to_a);
        self.input(b, to_b);
    }

    fn connect_all(&mut self) {
        for a in 0..self.nodes.len() {
            for b in self.net.neighbours(a).to_vec() {
                if a < b {
                    self.link_changed(a, b, true);
                }
            }
        }
    }

    /// True if every node is up and all hold the same deltas and the same state.
    fn all_agree(&self) -> bool {
        let mut replicas = self.nodes.iter().map(|n| n.replica.as_ref());
        let Some(Some(first)) = replicas.next() else {
            return false;
        };
        let (vv, digest) = (first.vv(), first.doc().digest());
        replicas.all(|r| r.is_some_and(|r| r.vv() == vv && r.doc().digest() == digest))
    }
}
