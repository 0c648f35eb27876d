//! A bounded queue to a reader that may fall behind (a `doc.watch` or `topic.subscribe`
//! client), which never drops anything silently. While the queue is full, items are
//! counted instead of sent, and none are sent after that: the reader gets what was
//! queued, then one [`Item::Lagged`] with the count, then the end. It knows exactly what
//! it missed and that it must read the state again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, Notify};

/// What a reader receives.
#[derive(Debug, PartialEq, Eq)]
pub enum Item<T> {
    Item(T),
    /// The reader fell behind and this many items were dropped; the stream ends here.
    Lagged(u64),
}

/// Set in [`Shared::dropped`] once the reader has taken the count: nothing is counted
/// after it, so the count it reported is exact.
const CLOSED: u64 = 1 << 63;

#[derive(Debug, Default)]
struct Shared {
    /// Items dropped so far, plus [`CLOSED`].
    dropped: AtomicU64,
    /// Wakes a reader that has read everything queued when the first item is dropped.
    lagging: Notify,
}

/// The writing side; cheap to keep per reader.
#[derive(Debug)]
pub struct Sender<T> {
    tx: mpsc::Sender<T>,
    shared: Arc<Shared>,
}

/// The reading side.
#[derive(Debug)]
pub struct Receiver<T> {
    rx: mpsc::Receiver<T>,
    shared: Arc<Shared>,
    done: bool,
}

/// A queue holding at most `capacity` items for its reader.
pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = mpsc::channel(capacity);
    let shared = Arc::new(Shared::default());
    (
        Sender {
            tx,
            shared: shared.clone(),
        },
        Receiver {
            rx,
            shared,
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
        if self.lagging() {
            return self.count_drop();
        }
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => self.count_drop(),
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Counts one dropped item unless the reader has already taken the count; wakes the
    /// reader on the first. False if the reader is gone.
    fn count_drop(&self) -> bool {
        let before = self
            .shared
            .dropped
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                (v & CLOSED == 0).then_some(v + 1)
            });
        match before {
            Ok(0) => {
                self.shared.lagging.notify_one();
                true
            }
            Ok(_) => true,
            Err(_) => false,
        }
    }

    /// True once the reader is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// True while items are being dropped for this reader.
    pub fn lagging(&self) -> bool {
        self.shared.dropped.load(Ordering::Acquire) != 0
    }
}

impl<T> Receiver<T> {
    /// The next item; after a lag, the count once everything queued has been read; then
    /// `None`.
    pub async fn recv(&mut self) -> Option<Item<T>> {
        loop {
            if self.done {
                return None;
            }
            if self.rx.is_empty() {
                if let Some(n) = self.take_count() {
                    return Some(Item::Lagged(n));
                }
            }
            tokio::select! {
                item = self.rx.recv() => match item {
                    Some(item) => return Some(Item::Item(item)),
                    None => {
                        self.done = true;
                        return self.take_count().map(Item::Lagged);
                    }
                },
                // Something was dropped while this reader waited on an empty queue.
                () = self.shared.lagging.notified() => {}
            }
        }
    }

    /// If items were dropped: stops the counting, ends the stream and returns the count.
    fn take_count(&mut self) -> Option<u64> {
        let before = self
            .shared
            .dropped
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                (v != 0 && v & CLOSED == 0).then_some(v | CLOSED)
            })
            .ok()?;
        self.rx.close();
        self.done = true;
        Some(before)
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
    async fn a_reader_that_keeps_reading_while_items_are_dropped_ends_with_the_count() {
        let (tx, mut rx) = channel(1);
        let reader = tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some(item) = rx.recv().await {
                seen.push(item);
            }
            seen
        });
        // The reader takes the one queued item and waits; later items are dropped while
        // the queue is full; the reader must then end with the count, not wait forever.
        assert!(tx.send(1));
        tokio::task::yield_now().await;
        assert!(tx.send(2));
        assert!(tx.send(3));
        let seen = tokio::time::timeout(std::time::Duration::from_secs(10), reader)
            .await
            .expect("the reader ended")
            .unwrap();
        let dropped: u64 = seen
            .iter()
            .map(|i| match i {
                Item::Lagged(n) => *n,
                Item::Item(_) => 0,
            })
            .sum();
        let delivered = seen.iter().filter(|i| matches!(i, Item::Item(_))).count() as u64;
        assert_eq!(delivered + dropped, 3, "{seen:?}");
        assert!(matches!(seen.last(), Some(Item::Lagged(_))), "{seen:?}");
        // Nothing is counted after the count was taken.
        assert!(!tx.send(4));
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
