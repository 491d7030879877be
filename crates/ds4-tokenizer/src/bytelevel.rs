//! GPT-2 byte-level alphabet: every byte gets a printable code point so that BPE works
//! on strings. Bytes 33–126, 161–172 and 174–255 stand for themselves; the other 68
//! (controls, space, DEL, the C1 range, NBSP and soft hyphen) are moved, in increasing
//! byte order, to U+0100, U+0101, …

/// Code point that stands for each byte.
pub(crate) fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for (b, slot) in table.iter_mut().enumerate() {
        let keeps_itself = matches!(b, 33..=126 | 161..=172 | 174..=255);
        let cp = if keeps_itself {
            b as u32
        } else {
            let cp = next;
            next += 1;
            cp
        };
        // All values are below U+0144, far from the surrogate range.
        *slot = char::from_u32(cp).unwrap_or('\0');
    }
    table
}

/// Inverse of [`byte_to_char_table`], indexed by code point (all are < U+0144).
pub(crate) struct CharToByte {
    table: [i16; 0x144],
}

impl CharToByte {
    pub(crate) fn new() -> Self {
        let mut table = [-1i16; 0x144];
        for (b, c) in byte_to_char_table().iter().enumerate() {
            table[*c as usize] = b as i16;
        }
        CharToByte { table }
    }

    #[inline]
    pub(crate) fn get(&self, c: char) -> Option<u8> {
        self.table
            .get(c as usize)
            .and_then(|&b| u8::try_from(b).ok())
    }

    /// The bytes a token string stands for, the way HF's ByteLevel decoder does it: if
    /// every char is in the byte alphabet, map each back to its byte; otherwise (added
    /// tokens such as `<｜User｜>`) the token's own UTF-8 bytes.
    pub(crate) fn token_bytes(&self, token: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(token.len());
        for c in token.chars() {
            match self.get(c) {
                Some(b) => out.push(b),
                None => return token.as_bytes().to_vec(),
            }
        }
        out
    }
}
