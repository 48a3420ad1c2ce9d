//! Union-find (disjoint sets) over small integer ids: which keys must be checked together.

/// Union-find over key ids, with path halving and union by size.
#[derive(Default)]
pub(crate) struct DisjointSets {
    parent: Vec<u32>,
    size: Vec<u32>,
}

impl DisjointSets {
    pub(crate) fn new(count: usize) -> DisjointSets {
        DisjointSets { parent: (0..count as u32).collect(), size: vec![1; count] }
    }

    pub(crate) fn len(&self) -> usize {
        self.parent.len()
    }

    /// Adds a set of one new id, `len()` before the call (ids appear as a file is read).
    pub(crate) fn push(&mut self) -> u32 {
        let id = u32::try_from(self.parent.len()).unwrap_or(u32::MAX);
        assert!(id < u32::MAX, "ids fit in u32");
        self.parent.push(id);
        self.size.push(1);
        id
    }

    pub(crate) fn find(&mut self, mut item: u32) -> u32 {
        while self.parent[item as usize] != item {
            let grandparent = self.parent[self.parent[item as usize] as usize];
            self.parent[item as usize] = grandparent;
            item = grandparent;
        }
        item
    }

    pub(crate) fn union(&mut self, a: u32, b: u32) {
        let (mut a, mut b) = (self.find(a), self.find(b));
        if a == b {
            return;
        }
        if self.size[a as usize] < self.size[b as usize] {
            std::mem::swap(&mut a, &mut b);
        }
        self.parent[b as usize] = a;
        self.size[a as usize] += self.size[b as usize];
    }

    /// `find` without path compression, for use behind a shared reference.
    pub(crate) fn find_const(&self, mut item: u32) -> u32 {
        while self.parent[item as usize] != item {
            item = self.parent[item as usize];
        }
        item
    }
}
