//! A reproducible byte stream, so a test can send many megabytes and check every byte that
//! comes back without keeping a copy.

/// An endless pseudo-random byte stream (xorshift64*) from a seed.
#[derive(Debug, Clone)]
pub struct Pattern {
    state: u64,
    pending: [u8; 8],
    used: usize,
}

impl Pattern {
    pub fn new(seed: u64) -> Pattern {
        Pattern {
            state: seed | 1,
            pending: [0; 8],
            used: 8,
        }
    }

    /// Fills `buf` with the next bytes of the stream.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for byte in buf {
            if self.used == 8 {
                self.state ^= self.state >> 12;
                self.state ^= self.state << 25;
                self.state ^= self.state >> 27;
                self.pending = self.state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
                self.used = 0;
            }
            *byte = self.pending[self.used];
            self.used += 1;
        }
    }

    /// Checks that `buf` is the next part of the stream; returns the offset of the first
    /// byte that differs.
    pub fn check(&mut self, buf: &[u8]) -> Result<(), usize> {
        let mut expected = vec![0u8; buf.len()];
        self.fill(&mut expected);
        match expected.iter().zip(buf).position(|(a, b)| a != b) {
            None => Ok(()),
            Some(offset) => Err(offset),
        }
    }
}
