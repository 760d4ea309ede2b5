//! Text in shared memory, which holds no pointers.

/// A fixed-size, NUL-padded string: shared memory holds no pointers.
#[derive(Copy, Clone)]
pub struct FixedText<const N: usize>([u8; N]);

impl<const N: usize> FixedText<N> {
    pub const EMPTY: Self = FixedText([0; N]);

    pub fn set(&mut self, text: &str) {
        let mut end = text.len().min(N);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        self.0 = [0; N];
        self.0[..end].copy_from_slice(&text.as_bytes()[..end]);
    }

    pub fn get(&self) -> Option<String> {
        let len = self.0.iter().position(|&b| b == 0).unwrap_or(N);
        (len > 0).then(|| String::from_utf8_lossy(&self.0[..len]).into_owned())
    }
}
