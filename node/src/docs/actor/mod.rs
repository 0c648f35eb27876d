//! The documents actor: owns every hosted replica and is the only code that feeds them.
//!
//! It waits on control commands, overlay events (gossip, sync requests, digest requests,
//! topic subscriptions, disconnections), completed storage commits, its own background
//! work (announcements and lookups in `finds.rs`, digest comparisons in `digests.rs`), and
//! timers (replicas' own, maintenance, the next comparison). Whatever a
//! replica outputs is acted on at once: deltas to the store (in order), messages to peers
//! (request-response tasks, bounded), broadcasts to the document's topic, acknowledgements
//! to waiting clients, changes to watchers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use lattice_crdt::sync::{
    self, Acl, Event as SyncEvent, Genesis, Input, Output, Replica, SignedDelta,
};
use lattice_crdt::{ActorId, DocId};
use lattice_overlay::{Event, Overlay, PeerId};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

mod commits;
mod digests;
mod finds;
mod joins;
mod maintain;
mod network;
mod observe;
mod timers;
mod verify;

use observe::{applied_writes, trace_deltas, MAX_CUTTING};

use super::clocks::Clocks;
use super::hosted::{Hosted, MAX_WATCHERS, WATCH_QUEUE};
use super::wire;
use super::{Command, DocsError, Edit, Reply};
use crate::activity::Activity;
use crate::auth::NodeAuth;
use crate::docs::{DocSummary, Written};
use crate::metrics::Metrics;
use crate::now_ms;
use crate::store::{Change, DocMeta, Store, StoreError};
use crate::subs::Subscriptions;

/// How often the actor looks over every document: replicas compact their history. Replicas' own timers (anti-entropy, expiries) are kept in [`timers::Timers`]:
/// a document is visited only when one of them is due.
const MAINTENANCE: Duration = Duration::from_secs(10);
/// Writes waiting to become durable; more are refused as busy.
const MAX_ACKS: usize = 8_192;
/// Sync messages in flight to peers; beyond this, messages are dropped (anti-entropy
/// repairs what they carried).
const MAX_SENDS: usize = 512;
/// The same per peer, and their bytes per peer and in all: a peer that asks for much (an
/// empty summary, a listing) and reads slowly holds no more than this.
const MAX_SENDS_PER_PEER: usize = 16;
const MAX_SEND_BYTES_PER_PEER: usize = 8 << 20;
const MAX_SEND_BYTES: usize = 64 << 20;
/// Background lookups (joins, provider searches, announcements) at once.
const MAX_BACKGROUND: usize = 64;
/// Messages from peers being decoded and verified off the async threads at once; beyond
/// this, gossip is ignored (anti-entropy repairs it) and requests are refused as busy.
/// Their bytes are bounded by the overlay's per-peer budgets, which they stay charged to.
const MAX_VERIFYING: usize = 64;

type Commit = Pin<Box<dyn Future<Output = (DocId, Option<u64>, Result<(), StoreError>)> + Send>>;

struct Ack {
    doc: DocId,
    reply: Reply<Written>,
}

pub(super) struct Actor {
    me: ActorId,
    auth: Arc<NodeAuth>,
    overlay: Overlay,
    store: Store,
    metrics: Metrics,
    /// Writes applied, for people watching (the status page).
    activity: Activity,
    commands: mpsc::WeakSender<Command>,
    docs: BTreeMap<DocId, Hosted>,
    topics: HashMap<String, DocId>,
    /// Connected peers' topic subscriptions, so a document hosted later finds its
    /// replicas among peers already connected.
    subs: Subscriptions,
    /// Join replies waiting for their replica to catch up, with their deadlines (ms).
    joining: HashMap<DocId, Vec<(Reply<DocSummary>, u64)>>,
    /// When each document is next due (its replica's timers, a waiting join).
    timers: timers::Timers,
    /// Peers' messages being decoded and verified on blocking threads (bounded).
    verifying: JoinSet<verify::Checked>,
    acks: HashMap<u64, Ack>,
    next_tag: u64,
    commits: FuturesUnordered<Commit>,
    /// Replication messages in flight, each returning its peer and size when done.
    sends: JoinSet<(PeerId, usize)>,
    /// Messages and bytes in flight per peer, and bytes in all.
    sending: HashMap<PeerId, (usize, usize)>,
    sending_bytes: usize,
    background: JoinSet<()>,
    seeds: u64,
    /// Fresh writes' clocks against this node's.
    clocks: Clocks,
    /// When each document next looks its providers up (ms), and its current back-off.
    finds: HashMap<DocId, (u64, Duration)>,
    /// Documents to announce once background work has room (at most one per document).
    unannounced: BTreeSet<DocId>,
    /// This node's digest comparisons in flight (bounded), and whose turn is next.
    digests: JoinSet<digests::Answer>,
    digest_turn: usize,
    /// Whose digest requests are answered now.
    digest_served: crate::docs::digests::ServeLimit,
    /// Cuts being computed (bounded by [`MAX_CUTTING`]).
    cutting: Arc<tokio::sync::Semaphore>,
    /// Every replica's configuration.
    config: sync::Config,
}

/// Replicas' own anti-entropy is a slow fallback: the digest comparisons with each peer
/// (`digests.rs`) find the documents that differ, whatever their number.
/// Replicas unheard of for `horizon` stop holding compaction back.
pub(in crate::docs) fn sync_config(horizon: Duration) -> sync::Config {
    sync::Config {
        anti_entropy_interval_ms: 30 * 60 * 1000,
        compaction_horizon_ms: u64::try_from(horizon.as_millis()).unwrap_or(u64::MAX),
        ..sync::Config::default()
    }
}

impl Actor {
    /// Restores every stored document.
    pub(super) async fn load(
        overlay: Overlay,
        store: Store,
        auth: Arc<NodeAuth>,
        commands: mpsc::WeakSender<Command>,
        metrics: Metrics,
        activity: Activity,
        config: sync::Config,
    ) -> Result<Actor, DocsError> {
        let mut a = Actor {
            me: auth.actor(),
            auth,
            overlay,
            store,
            metrics,
            activity,
            commands,
            docs: BTreeMap::new(),
            topics: HashMap::new(),
            subs: Subscriptions::default(),
            joining: HashMap::new(),
            timers: timers::Timers::default(),
            verifying: JoinSet::new(),
            acks: HashMap::new(),
            next_tag: 1,
            commits: FuturesUnordered::new(),
            sends: JoinSet::new(),
            sending: HashMap::new(),
            sending_bytes: 0,
            background: JoinSet::new(),
            seeds: now_ms(),
            clocks: Clocks::default(),
            finds: HashMap::new(),
            unannounced: BTreeSet::new(),
            digests: JoinSet::new(),
            digest_turn: 0,
            digest_served: Default::default(),
            cutting: Arc::new(tokio::sync::Semaphore::new(MAX_CUTTING)),
            config,
        };
        for meta in a.store.docs().await? {
            let stored = a.store.load(meta.id()).await?;
            let n = stored.len();
            let me = a.me;
            let own_stored = stored
                .iter()
                .filter(|d| d.author == me)
                .map(|d| d.seqs.last)
                .max()
                .unwrap_or(0);
            let acks = a.store.acks(meta.id()).await?;
            let id = a.host(meta, stored, acks, false).await;
            info!(doc = %id, deltas = n, "document restored");
            // Own deltas past a gap are writes a failed commit undid that a later commit
            // stored anyway (a crash came before the cut): delete them before a new write
            // takes their sequence numbers.
            let kept = a.docs.get(&id).map_or(0, |h| h.replica.vv().get(&me));
            if own_stored > kept {
                warn!(doc = %id, kept, "deleting own writes stored past a gap");
                let cut = Change::Truncate {
                    doc: id,
                    author: me,
                    after: kept,
                };
                a.store.enqueue(vec![cut]).await?.await?;
            }
        }
        Ok(a)
    }

    pub(super) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut events: mpsc::Receiver<Event>,
    ) {
        let mut maintenance = tokio::time::interval(MAINTENANCE);
        maintenance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut compare = tokio::time::interval(digests::DIGEST_EVERY);
        compare.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let wake = self.timers.next().map(|at| {
                tokio::time::Instant::now() + Duration::from_millis(at.saturating_sub(now_ms()))
            });
            tokio::select! {
                c = commands.recv() => match c {
                    Some(c) => self.command(c).await,
                    None => break,
                },
                Some(e) = events.recv() => self.event(e).await,
                Some((doc, ticket, r)) = self.commits.next(), if !self.commits.is_empty() => {
                    self.committed(doc, ticket, r).await;
                }
                () = until(wake) => self.due().await,
                _ = maintenance.tick() => {
                    self.maintain().await;
                }
                Some(c) = self.verifying.join_next(), if !self.verifying.is_empty() => {
                    if let Ok(c) = c {
                        self.checked(c).await;
                    }
                }
                Some(done) = self.sends.join_next(), if !self.sends.is_empty() => {
                    if let Ok((peer, size)) = done {
                        self.sent(peer, size);
                    }
                }
                Some(_) = self.background.join_next(), if !self.background.is_empty() => {
                    self.announce_waiting();
                }
                _ = compare.tick() => self.compare_next(),
                Some(a) = self.digests.join_next(), if !self.digests.is_empty() => {
                    if let Ok(a) = a {
                        self.compared(a).await;
                    }
                }
            }
        }
        // Let queued commits finish so their writers hear back before the daemon exits.
        let drain = async {
            while let Some((doc, ticket, r)) = self.commits.next().await {
                self.committed(doc, ticket, r).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
        self.sends.abort_all();
        self.verifying.abort_all();
        self.background.abort_all();
        self.digests.abort_all();
    }

    /// Hosts a document: replica from `stored`, topic subscribed, replicas announced.
    /// `acks`: what its peer replicas held, as saved by an earlier run.
    async fn host(
        &mut self,
        meta: DocMeta,
        stored: Vec<SignedDelta>,
        acks: Vec<(ActorId, sync::Ack)>,
        joined: bool,
    ) -> DocId {
        let id = meta.id();
        self.seeds += 1;
        let mut replica = Replica::restore(
            id,
            self.me,
            self.auth.clone(),
            self.config.clone(),
            self.seeds,
            Acl::from_genesis(&meta.genesis),
            stored,
        )
        .with_acks(acks);
        if joined {
            replica = replica.catching_up();
        }
        let topic = wire::topic(&id);
        if let Err(e) = self.overlay.subscribe(topic.clone()).await {
            warn!(doc = %id, "cannot subscribe to the document's topic: {e}");
        }
        self.topics.insert(topic.clone(), id);
        self.docs.insert(id, Hosted::new(meta, replica));
        self.schedule(id);
        self.announce(id);
        for peer in self.subs.peers(&topic) {
            self.peer_up(id, peer).await;
        }
        id
    }

    fn resolve(&self, doc: &str) -> Result<DocId, DocsError> {
        if let Ok(id) = doc.parse::<DocId>() {
            if self.docs.contains_key(&id) {
                return Ok(id);
            }
        }
        let named: Vec<DocId> = self
            .docs
            .values()
            .filter(|h| h.name() == doc)
            .map(|h| h.id)
            .collect();
        match named[..] {
            [id] => Ok(id),
            [] => Err(DocsError::Unknown(doc.to_owned())),
            _ => Err(DocsError::Ambiguous {
                alias: doc.to_owned(),
                count: named.len(),
            }),
        }
    }

    fn hosted(&self, doc: &str) -> Result<&Hosted, DocsError> {
        let id = self.resolve(doc)?;
        self.docs.get(&id).ok_or(DocsError::Unknown(doc.to_owned()))
    }

    async fn command(&mut self, c: Command) {
        match c {
            Command::Create {
                name,
                open,
                writers,
                reply,
            } => {
                let genesis = Genesis {
                    owner: self.me,
                    name,
                    nonce: rand::random(),
                    open,
                    writers,
                };
                let r = self.adopt(genesis, false).await;
                let _ = reply.send(r);
            }
            Command::Join { id, reply } => self.join(id, reply),
            Command::Adopt { genesis, reply } => self.adopt_joined(genesis, reply).await,
            Command::Count { reply } => {
                let _ = reply.send(Ok(self.docs.len()));
            }
            Command::Clocks { reply } => {
                let _ = reply.send(Ok(self.clocks.recent(now_ms())));
            }
            Command::List { reply } => {
                let _ = reply.send(Ok(self.docs.values().map(Hosted::summary).collect()));
            }
            Command::Info { doc, reply } => {
                let _ = reply.send(self.hosted(&doc).map(Hosted::summary));
            }
            Command::Cut { doc, at_ms, reply } => self.cut(&doc, at_ms, reply),
            Command::Get { doc, key, reply } => {
                let _ = reply.send(self.hosted(&doc).and_then(|h| h.get(key.as_deref())));
            }
            Command::Writers { doc, reply } => {
                let _ = reply.send(self.hosted(&doc).map(Hosted::writers));
            }
            Command::Write { doc, edit, reply } => self.write(doc, edit, reply).await,
            Command::Watch { doc, reply } => {
                let r = self.resolve(&doc).and_then(|id| {
                    let h = self.docs.get_mut(&id).ok_or(DocsError::Unknown(doc))?;
                    h.watchers.retain(|w| !w.is_closed());
                    if h.watchers.len() >= MAX_WATCHERS {
                        return Err(DocsError::Busy);
                    }
                    let (tx, rx) = crate::lossy::channel(WATCH_QUEUE);
                    h.watchers.push(tx);
                    Ok(rx)
                });
                let _ = reply.send(r);
            }
        }
    }

    async fn write(&mut self, doc: String, edit: Edit, reply: Reply<Written>) {
        let id = match self.resolve(&doc) {
            Ok(id) => id,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        if self.acks.len() >= MAX_ACKS {
            let _ = reply.send(Err(DocsError::Busy));
            return;
        }
        let tag = self.next_tag;
        self.next_tag += 1;
        let input = match edit {
            Edit::Op(op) => Input::Write { op, tag },
            Edit::Writers(changes) if changes.is_empty() => {
                let _ = reply.send(Err(DocsError::BadRequest("nothing to write".into())));
                return;
            }
            // Every change in one write: all of them, or (on any refusal) none.
            Edit::Writers(changes) => Input::Admin { changes, tag },
        };
        match self.apply(id, input).await {
            Ok(()) => {
                self.acks.insert(tag, Ack { doc: id, reply });
            }
            Err(e) => {
                let _ = reply.send(Err(DocsError::from_sync(id, e)));
            }
        }
    }

    /// Feeds one input to a replica and acts on everything it outputs.
    async fn apply(&mut self, id: DocId, input: Input) -> Result<(), sync::SyncError> {
        let Some(h) = self.docs.get_mut(&id) else {
            return Ok(());
        };
        // Only these can change the content (a commit or a tick cannot).
        let changes = matches!(
            input,
            Input::Write { .. }
                | Input::Admin { .. }
                | Input::Message { .. }
                | Input::Verified { .. }
        );
        let before = if changes {
            h.snapshot_if_watched()
        } else {
            None
        };
        let result = h.handle(now_ms(), input);
        self.drive(id, before).await;
        self.answer_joins(id, false);
        self.schedule(id);
        result
    }

    /// Sets when `id` is next due: its replica's next timer, or a join's deadline.
    fn schedule(&mut self, id: DocId) {
        let replica = self.docs.get(&id).and_then(|h| h.replica.poll_timeout());
        let join = self
            .joining
            .get(&id)
            .and_then(|w| w.iter().map(|(_, deadline)| *deadline).min());
        self.timers.set(id, replica.into_iter().chain(join).min());
    }

    /// Visits the documents whose timers are due.
    async fn due(&mut self) {
        for id in self.timers.due(now_ms()) {
            self.answer_joins(id, true);
            let _ = self.apply(id, Input::Tick).await;
        }
    }

    async fn drive(&mut self, id: DocId, before: Option<serde_json::Value>) {
        let Some(h) = self.docs.get_mut(&id) else {
            return;
        };
        let mut changes = Vec::new();
        let mut ticket = None;
        let mut sends = Vec::new();
        let mut broadcasts = Vec::new();
        let mut acks = Vec::new();
        let mut authors = BTreeSet::new();
        let mut local = false;
        // Single writes applied: (author, seq, local, lag in ms).
        let mut writes = Vec::new();
        while let Some(o) = h.replica.poll_output() {
            match o {
                Output::Persist { ticket: t, delta } => {
                    changes.push(Change::Put(delta));
                    ticket = Some(t);
                }
                Output::Truncate { author, after } => changes.push(Change::Truncate {
                    doc: id,
                    author,
                    after,
                }),
                Output::Send { to, msg } => sends.push((to, msg)),
                Output::Broadcast(msg) => broadcasts.push(msg),
                Output::Event(SyncEvent::Acknowledged { tag, seq }) => acks.push((tag, Ok(seq))),
                Output::Event(SyncEvent::Refused { tag }) => {
                    acks.push((tag, Err(DocsError::NotAWriter(id.to_string()))));
                }
                Output::Event(SyncEvent::Applied {
                    author,
                    seqs,
                    hlc,
                    local: l,
                }) => {
                    self.metrics.delta_applied();
                    authors.insert(author);
                    local |= l;
                    // One write (not a fold of many): traced and shown to watchers. Its
                    // age is the sync lag when it came live by gossip (`verify.rs`).
                    if seqs.first == seqs.last {
                        let lag_ms = now_ms().saturating_sub(hlc.millis);
                        writes.push((author, seqs.last, l, lag_ms));
                    }
                }
                Output::Event(SyncEvent::Equivocated { author, cut }) => {
                    self.metrics.delta_rejected();
                    warn!(doc = %id, writer = %author, cut, "a writer signed two versions of the same writes; its writes after the cut are dropped everywhere");
                }
                Output::Event(SyncEvent::Truncated { author, after }) => {
                    warn!(doc = %id, writer = %author, after, "deltas dropped past a cut (a writer removed, or this node's own writes undone after a failed commit)");
                    authors.insert(author);
                }
            }
        }
        if !writes.is_empty() {
            applied_writes(&self.activity, h.name(), &id, &writes);
        }
        if let Some(before) = before.filter(|_| !authors.is_empty()) {
            h.notify(before, local, &authors);
        }
        if !changes.is_empty() {
            match self.store.enqueue(changes).await {
                Ok(done) => self
                    .commits
                    .push(Box::pin(async move { (id, ticket, done.await) })),
                Err(e) => self.store_failed(id, &e),
            }
        }
        for (to, msg) in sends {
            if let sync::Message::Deltas { deltas, .. } = &msg {
                trace_deltas(deltas, "sent by repair", &to);
            }
            self.send(to, msg);
        }
        let topic = wire::topic(&id);
        for msg in broadcasts {
            if let sync::Message::Delta(d) = &msg {
                trace_deltas(
                    std::slice::from_ref(d),
                    "published",
                    &"the document's topic",
                );
            }
            let bytes = msg.encode();
            self.metrics.gossip_sent(bytes.len());
            if let Err(e) = self.overlay.publish(topic.clone(), bytes).await {
                debug!(doc = %id, "publish failed (anti-entropy will carry it): {e}");
            }
        }
        for (tag, result) in acks {
            if let Some(a) = self.acks.remove(&tag) {
                let trace = |seq| crate::trace::write_id(&id, &self.me, seq);
                let _ = a.reply.send(result.map(|seq| Written {
                    doc: id,
                    seq,
                    trace: trace(seq),
                }));
            }
        }
    }
}

/// Sleeps until `at`, or for ever without one.
async fn until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
