//! The simulated network's shape: who is connected to whom, and which side of a
//! partition each node is on.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

pub(super) struct Net {
    neighbours: Vec<Vec<usize>>,
    group: Vec<u8>,
}

impl Net {
    /// A ring (so the graph is connected) plus random chords up to `degree` links a node.
    pub(super) fn new(n: usize, degree: usize, rng: &mut ChaCha8Rng) -> Self {
        let mut neighbours = vec![Vec::new(); n];
        let link = |a: usize, b: usize, nb: &mut Vec<Vec<usize>>| {
            if a != b && !nb[a].contains(&b) {
                nb[a].push(b);
                nb[b].push(a);
            }
        };
        if n > 1 {
            for i in 0..n {
                link(i, (i + 1) % n, &mut neighbours);
            }
            // Bounded: each node tries a fixed number of random chords.
            for i in 0..n {
                for _ in 0..degree.saturating_sub(2) * 2 {
                    if neighbours[i].len() >= degree {
                        break;
                    }
                    let j = rng.random_range(0..n);
                    link(i, j, &mut neighbours);
                }
            }
        }
        neighbours.iter_mut().for_each(|v| v.sort_unstable());
        Net {
            neighbours,
            group: vec![0; n],
        }
    }

    pub(super) fn neighbours(&self, node: usize) -> &[usize] {
        &self.neighbours[node]
    }

    /// True if `a` and `b` are on the same side of any partition.
    pub(super) fn linked(&self, a: usize, b: usize) -> bool {
        self.group[a] == self.group[b]
    }

    /// Splits the nodes into two non-empty random sides; returns the links that broke.
    pub(super) fn partition(&mut self, rng: &mut ChaCha8Rng) -> Vec<(usize, usize)> {
        let n = self.group.len();
        for g in self.group.iter_mut() {
            *g = u8::from(rng.random_bool(0.5));
        }
        if n > 1 {
            self.group[0] = 0;
            self.group[n - 1] = 1;
        }
        self.cross_links()
    }

    /// Ends any partition; returns the links that came back.
    pub(super) fn heal(&mut self) -> Vec<(usize, usize)> {
        let back = self.cross_links();
        self.group.iter_mut().for_each(|g| *g = 0);
        back
    }

    fn cross_links(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (a, nb) in self.neighbours.iter().enumerate() {
            for &b in nb {
                if a < b && self.group[a] != self.group[b] {
                    out.push((a, b));
                }
            }
        }
        out
    }
}
