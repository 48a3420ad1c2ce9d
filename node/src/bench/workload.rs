//! What each request does: which operation (from the mix), on which key, with which value.
//! Keys are fixed-width decimal numbers padded to `key_bytes` (`k00000042…`); values are
//! `value_bytes` of printable bytes, so both systems store exactly the same data.

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::options::Plan;

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Put,
    Get,
    Cas,
}

pub struct Workload {
    rng: ChaCha8Rng,
    keys: u64,
    key_bytes: usize,
    value: Bytes,
    put_percent: u32,
    get_percent: u32,
}

pub fn key_name(index: u64, key_bytes: usize) -> String {
    format!("k{index:0>width$}", width = key_bytes.saturating_sub(1))
}

pub fn value_of(value_bytes: usize) -> Bytes {
    Bytes::from((0..value_bytes).map(|i| b'a' + (i % 26) as u8).collect::<Vec<u8>>())
}

impl Workload {
    pub fn new(plan: &Plan, worker: usize) -> Workload {
        Workload {
            rng: ChaCha8Rng::seed_from_u64(0x5eed ^ worker as u64),
            keys: plan.keys,
            key_bytes: plan.key_bytes,
            value: value_of(plan.value_bytes),
            put_percent: plan.mix.put_percent,
            get_percent: plan.mix.get_percent,
        }
    }

    pub fn value(&self) -> Bytes {
        self.value.clone()
    }

    pub fn next(&mut self) -> (Operation, String) {
        let roll = self.rng.random_range(0..100);
        let operation = if roll < self.put_percent {
            Operation::Put
        } else if roll < self.put_percent + self.get_percent {
            Operation::Get
        } else {
            Operation::Cas
        };
        let key = key_name(self.rng.random_range(0..self.keys), self.key_bytes);
        (operation, key)
    }
}
