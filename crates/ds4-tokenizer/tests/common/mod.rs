//! Shared test helpers: the bundled tokenizer.json, the HF oracle, a seeded corpus.
#![allow(dead_code)]

use std::io::Read;
use std::path::PathBuf;
use std::sync::OnceLock;

use ds4_tokenizer::Tokenizer;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The official DeepSeek V4 tokenizer.json, from the gzip copy in assets/.
pub fn tokenizer_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let path = repo_root().join("assets/tokenizer/deepseek-v4-tokenizer.json.gz");
        let gz = std::fs::read(&path).expect("read bundled tokenizer");
        let mut text = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut text)
            .expect("gunzip tokenizer");
        text
    })
}

pub fn ours() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| Tokenizer::from_json(tokenizer_json()).expect("load tokenizer.json"))
}

pub fn hf_from(json: &str) -> tokenizers::Tokenizer {
    json.parse::<tokenizers::Tokenizer>()
        .expect("HF tokenizers loads the json")
}

pub fn oracle() -> &'static tokenizers::Tokenizer {
    static TOK: OnceLock<tokenizers::Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| hf_from(tokenizer_json()))
}

pub fn hf_encode(tok: &tokenizers::Tokenizer, text: &str) -> Vec<u32> {
    tok.encode(text, false)
        .expect("HF encode")
        .get_ids()
        .to_vec()
}

/// SplitMix64: small, seedable, good enough to drive a text generator.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn range(&mut self, lo: u32, hi_inclusive: u32) -> u32 {
        lo + (self.next_u64() % u64::from(hi_inclusive - lo + 1)) as u32
    }
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    pub fn pick_str(&mut self, items: &[&'static str]) -> &'static str {
        items[self.below(items.len())]
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn push_cp(s: &mut String, cp: u32) {
    if let Some(c) = char::from_u32(cp) {
        s.push(c);
    }
}

fn push_run(rng: &mut Rng, s: &mut String, ranges: &[(u32, u32)], min: usize, max: usize) {
    let n = min + rng.below(max - min + 1);
    for _ in 0..n {
        let &(lo, hi) = rng.pick(ranges);
        push_cp(s, rng.range(lo, hi));
    }
}

const LATIN_WORDS: &[&str] = &[
    "the",
    "The",
    "THE",
    "hello",
    "World",
    "naïve",
    "café",
    "Ærø",
    "façade",
    "über",
    "straße",
    "São",
    "Paulo",
    "jalapeño",
    "œuvre",
    "Škoda",
    "Łódź",
    "İstanbul",
    "ĳssel",
    "résumé",
    "coöperate",
    "Ångström",
    "x",
    "a",
    "I",
    "fi",
    "ﬁx",
    "Ⅻth",
    "mañana",
];
const CONTRACTIONS: &[&str] = &[
    "'s", "'S", "'ll", "'LL", "'Ll", "'ve", "'VE", "'Ve", "'re", "'RE", "'d", "'D", "'t", "'T",
    "'m", "'M", "’s", "’ll", "n't", "N'T", "'", "''", "'x", "'Σ", "'é",
];
const CODE: &[&str] = &[
    "fn main() {\n    let x = vec![1, 2, 3];\n    println!(\"{x:?}\");\n}\n",
    "if (a && b) { return -1; }\n",
    "def f(x):\n\treturn x**2  # square\n",
    "#include <stdio.h>\nint main(void){printf(\"%d\\n\",42);}\r\n",
    "{\"key\": [1.5e-7, true, null], \"k2\": \"v\\u00e9\"}",
    "https://example.com/path?q=1&r=2#frag",
    "x += 1; y -= 2; z ^= 0xFF;",
    "    let mut s = String::new();\n",
    "SELECT * FROM t WHERE a<>b;",
    "a.b.c.d_e_f->g::h",
    "<div class=\"x\">&amp;&lt;</div>",
    "$ ls -la ~/.config | grep -v '^d'\n",
    "        }\n    }\n}\n\n",
    "__init__.py",
    "@@ -1,3 +1,4 @@",
];
const PUNCT: &[&str] = &[
    "。", "。\n", "。\n\n", "、", "，", "！", "？", "「", "」", "『", "』", "《", "》", "…", "——",
    "—\n", "·", "：", "；", "（", "）", "【", "】", "～", "!", "?", ".", ",", ";", ":", "...",
    "!!\n", "?\r\n", "--", "«", "»", "¿", "¡", "‽", "§", "¶", "†", "€", "$", "£", "¥", "©", "®",
    "™", "°", "±", "×", "÷", "≠", "≤", "∑", "√", "∞", "→", "⇒", "♥", "★", "《\n", "•", " (", " [",
    " {", " \"", " '", "\"", "'", "`", "```", "~~~", "|", "\\", "/", "^", "_",
];
const WS: &[&str] = &[
    " ", " ", " ", "\t", "\n", "\r\n", "\r", "\u{a0}", "\u{3000}", "\u{2003}", "\u{200b}",
    "\u{feff}", "\u{b}", "\u{c}", "\u{85}", "\u{2028}", "\u{2029}", "\u{1680}", "\u{202f}",
];
const EMOJI: &[&str] = &[
    "😀",
    "👍🏽",
    "👍🏿",
    "👨\u{200d}👩\u{200d}👧\u{200d}👦",
    "🏳️\u{200d}🌈",
    "🇫🇷",
    "🇯🇵🇺🇸",
    "1️⃣",
    "#️⃣",
    "❤️",
    "✌🏻",
    "🧑🏾\u{200d}💻",
    "👩🏼\u{200d}🦰",
    "🐈\u{200d}⬛",
    "☺",
    "🫠",
    "\u{fe0f}",
    "\u{200d}",
];
const ODD: &[u32] = &[
    0xFFFD, 0xFFFE, 0xFFFF, 0xD7FF, 0xE000, 0xF8FF, 0x10FFFF, 0x10FFFD, 0xFEFF, 0x0300, 0x0301,
    0x20DD, 0x034F, 0x2060, 0x00AD, 0x061C, 0x200E, 0x202E, 0xE0041, 0x1D400, 0x1D7CE, 0x2070,
    0x00B2, 0x00BD, 0x2153, 0x2160, 0x216B, 0x3007, 0x3021, 0x2460, 0x1F100, 0x10107, 0x0BF0,
];

/// One random string mixing scripts, digits, emoji, code, punctuation, whitespace runs,
/// control characters, contractions, odd code points and added-token text.
pub fn random_text(rng: &mut Rng, added: &[String]) -> String {
    let mut s = String::new();
    let fragments = 1 + rng.below(10);
    for _ in 0..fragments {
        match rng.below(23) {
            0 => {
                let w = *rng.pick(LATIN_WORDS);
                s.push_str(w);
                if rng.chance(40) {
                    s.push_str(rng.pick_str(CONTRACTIONS));
                }
            }
            1 => push_run(
                rng,
                &mut s,
                &[(0x61, 0x7A), (0x41, 0x5A), (0xC0, 0x17F), (0x1E00, 0x1EFF)],
                1,
                12,
            ),
            2 => push_run(
                rng,
                &mut s,
                &[
                    (0x4E00, 0x9FA5),
                    (0x9FA6, 0x9FFF),
                    (0x3400, 0x4DBF),
                    (0x20000, 0x2A6DF),
                    (0xF900, 0xFAFF),
                ],
                1,
                12,
            ),
            3 => push_run(
                rng,
                &mut s,
                &[
                    (0x3040, 0x309F),
                    (0x30A0, 0x30FF),
                    (0xFF65, 0xFF9F),
                    (0x31F0, 0x31FF),
                ],
                1,
                10,
            ),
            4 => push_run(
                rng,
                &mut s,
                &[(0xAC00, 0xD7A3), (0x1100, 0x11FF), (0x3130, 0x318F)],
                1,
                8,
            ),
            5 => push_run(
                rng,
                &mut s,
                &[
                    (0x0621, 0x064A),
                    (0x064B, 0x0652),
                    (0x060C, 0x060C),
                    (0x061F, 0x061F),
                    (0x0670, 0x06D3),
                ],
                1,
                10,
            ),
            6 => push_run(
                rng,
                &mut s,
                &[(0x05D0, 0x05EA), (0x05B0, 0x05C7), (0x05F3, 0x05F4)],
                1,
                8,
            ),
            7 => push_run(
                rng,
                &mut s,
                &[
                    (0x0905, 0x0939),
                    (0x093E, 0x094D),
                    (0x0900, 0x0903),
                    (0x0964, 0x0965),
                ],
                1,
                10,
            ),
            8 => push_run(
                rng,
                &mut s,
                &[(0x0E01, 0x0E2E), (0x0E30, 0x0E3A), (0x0E40, 0x0E4E)],
                1,
                10,
            ),
            9 => push_run(
                rng,
                &mut s,
                &[(0x0410, 0x044F), (0x0391, 0x03C9), (0x0400, 0x040F)],
                1,
                10,
            ),
            10 => {
                for _ in 0..1 + rng.below(3) {
                    s.push_str(rng.pick_str(EMOJI));
                }
            }
            11 => push_run(
                rng,
                &mut s,
                &[
                    (0x30, 0x39),
                    (0x30, 0x39),
                    (0x0660, 0x0669),
                    (0x06F0, 0x06F9),
                    (0x0966, 0x096F),
                    (0xFF10, 0xFF19),
                    (0x0E50, 0x0E59),
                    (0x09E6, 0x09EF),
                    (0x00B2, 0x00B3),
                    (0x00BC, 0x00BE),
                    (0x2160, 0x217F),
                    (0x2460, 0x2473),
                    (0x1D7CE, 0x1D7FF),
                ],
                1,
                9,
            ),
            12 => s.push_str(rng.pick_str(CODE)),
            13 => {
                for _ in 0..1 + rng.below(3) {
                    s.push_str(rng.pick_str(PUNCT));
                }
            }
            14 => {
                let n = if rng.chance(10) {
                    50 + rng.below(250)
                } else {
                    1 + rng.below(12)
                };
                for _ in 0..n {
                    s.push_str(rng.pick_str(WS));
                }
            }
            15 => push_run(rng, &mut s, &[(0x00, 0x1F), (0x7F, 0x9F)], 1, 4),
            16 => {
                // Added-token text, sometimes cut short or doubled up.
                let t = rng.pick(added).clone();
                match rng.below(6) {
                    0 => {
                        let cut: String =
                            t.chars().take(1 + rng.below(t.chars().count())).collect();
                        s.push_str(&cut);
                    }
                    1 => {
                        s.push('<');
                        s.push_str(&t);
                        s.push('>');
                    }
                    _ => s.push_str(&t),
                }
            }
            17 => push_cp(&mut s, *rng.pick(ODD)),
            18 => {
                // Any scalar value at all: exercises every Unicode class table.
                let cp = if rng.chance(50) {
                    rng.range(0, 0xFFFF)
                } else {
                    rng.range(0, 0x10FFFF)
                };
                push_cp(&mut s, cp);
            }
            19 => {
                // Combining marks in awkward places.
                let base = *rng.pick(&["e", " ", "1", "", "\n", "ア", "中", "!", "ㄱ"]);
                s.push_str(base);
                push_run(
                    rng,
                    &mut s,
                    &[(0x0300, 0x036F), (0x1AB0, 0x1AFF), (0x20D0, 0x20FF)],
                    1,
                    3,
                );
            }
            20 => {
                let w = *rng.pick(&["DON", "don", "I", "We", "they", "IT", "Ä"]);
                s.push_str(w);
                s.push_str(rng.pick_str(CONTRACTIONS));
            }
            21 => {
                // Long runs stress the heap path of the merge loop.
                let c = *rng.pick(&["a", "ab", "=", "-", "0", "中", " ", "\n", "é", "😀"]);
                for _ in 0..20 + rng.below(120) {
                    s.push_str(c);
                }
            }
            _ => s.push_str(rng.pick_str(WS)),
        }
        if rng.chance(50) {
            s.push_str(rng.pick_str(&[" ", " ", "\n", "", "\t", ", ", ". ", " - "]));
        }
    }
    s
}

pub fn added_contents() -> Vec<String> {
    ours()
        .added_tokens()
        .iter()
        .map(|t| t.content.clone())
        .collect()
}

/// Escapes a string for a failure message.
pub fn show(s: &str) -> String {
    format!("{s:?}")
}
