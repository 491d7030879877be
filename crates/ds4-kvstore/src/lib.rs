//! ds4-kvstore: the KV cache on disk.
//!
//! One directory of files, one per saved session prefix, in the format of
//! `FORMAT.md` (magic, version, model identity, token count, checksums, the key
//! text, the tool-id map, the engine's session payload). The store does not look
//! inside the payload: the engine writes and checks it.
//!
//! * Writes go to a temporary file that is fsynced, then renamed into place (and
//!   the directory fsynced), so a crash leaves either the old state or the whole
//!   new file; leftover temporary files are removed at the next open.
//! * Every file is verified before it is used: header checksum, magic, version,
//!   model identity and sizes at open; the key text and tool map checksum at
//!   open; the payload checksum and the key text against the prompt at lookup.
//!   A bad file is reported, removed, and never returned.
//! * A lock file (`.lock`, an exclusive `flock`) keeps a second process out of
//!   the directory while the store is open.
//! * Least-recently-used files are removed while the total exceeds the budget;
//!   the file just written is kept unless it alone exceeds the budget.
//! * After a write error (disk full, unwritable directory) the store stops
//!   saving, says why once, and keeps serving lookups.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

pub const MAGIC: [u8; 8] = *b"DS4RSKV\n";
pub const VERSION: u32 = 1;
pub const HEADER_LEN: usize = 128;
/// Tool ids longer than this are refused on load (ds4's bound).
pub const MAX_TOOL_ID_LEN: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("KV cache directory {0} is in use by another process (its .lock is held)")]
    Locked(PathBuf),
    #[error("bad KV cache file: {0}")]
    Bad(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a saved session belongs to. Files of another identity are foreign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// A digest of the model: its architecture and a fingerprint of weights that
    /// do not depend on the routed-expert quantization.
    pub model: [u8; 32],
    /// Routed-expert quantization in bits (2 or 4; 0 unknown).
    pub quant_bits: u8,
}

/// Why a file was written (kept for diagnostics, as ds4 does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reason {
    Unknown = 0,
    Cold = 1,
    Continued = 2,
    Evict = 3,
    Shutdown = 4,
}

impl Reason {
    fn from_u8(v: u8) -> Reason {
        match v {
            1 => Reason::Cold,
            2 => Reason::Continued,
            3 => Reason::Evict,
            4 => Reason::Shutdown,
            _ => Reason::Unknown,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Reason::Unknown => "unknown",
            Reason::Cold => "cold",
            Reason::Continued => "continued",
            Reason::Evict => "evict",
            Reason::Shutdown => "shutdown",
        }
    }
}

/// One session prefix to save.
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    pub reason: Reason,
    /// Tokens the payload holds.
    pub tokens: u32,
    /// Context of the session that wrote it.
    pub ctx: u32,
    /// The key: the rendered text these tokens stand for.
    pub text: &'a str,
    /// Tool id → exact DSML block, for the blocks inside `text`.
    pub tool_map: &'a [(String, String)],
    pub payload: &'a [u8],
}

/// A file found by [`KvStore::lookup`], verified.
#[derive(Debug, Clone)]
pub struct Hit {
    pub file: String,
    pub reason: Reason,
    pub tokens: u32,
    pub ctx: u32,
    /// Bytes of the prompt the entry covers.
    pub text_len: usize,
    pub tool_map: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveOutcome {
    Saved {
        bytes: u64,
    },
    /// Larger than the whole budget (with 1% slack).
    TooLarge,
    /// Saving is off after an earlier write error.
    Disabled,
}

#[derive(Debug, Clone)]
struct Header {
    quant_bits: u8,
    reason: Reason,
    tokens: u32,
    ctx: u32,
    hits: u32,
    created: u64,
    last_used: u64,
    text_len: u64,
    map_len: u64,
    payload_len: u64,
    meta_crc: u32,
    payload_crc: u32,
    model: [u8; 32],
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(&MAGIC);
        h[8..12].copy_from_slice(&VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        h[16..48].copy_from_slice(&self.model);
        h[48] = self.quant_bits;
        h[49] = self.reason as u8;
        let flags: u16 = u16::from(self.map_len > 4);
        h[50..52].copy_from_slice(&flags.to_le_bytes());
        h[52..56].copy_from_slice(&self.tokens.to_le_bytes());
        h[56..60].copy_from_slice(&self.ctx.to_le_bytes());
        h[60..64].copy_from_slice(&self.hits.to_le_bytes());
        h[64..72].copy_from_slice(&self.created.to_le_bytes());
        h[72..80].copy_from_slice(&self.last_used.to_le_bytes());
        h[80..88].copy_from_slice(&self.text_len.to_le_bytes());
        h[88..96].copy_from_slice(&self.map_len.to_le_bytes());
        h[96..104].copy_from_slice(&self.payload_len.to_le_bytes());
        h[104..108].copy_from_slice(&self.meta_crc.to_le_bytes());
        h[108..112].copy_from_slice(&self.payload_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..124]);
        h[124..128].copy_from_slice(&crc.to_le_bytes());
        h
    }

    fn decode(h: &[u8; HEADER_LEN]) -> std::result::Result<Header, String> {
        let u32_at = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[o..o + 8]);
            u64::from_le_bytes(b)
        };
        if h[0..8] != MAGIC {
            return Err("not a ds4-rs KV cache file (magic)".into());
        }
        if u32_at(8) != VERSION {
            return Err(format!(
                "format version {} (this build reads {VERSION})",
                u32_at(8)
            ));
        }
        if u32_at(12) as usize != HEADER_LEN {
            return Err(format!("header length {}", u32_at(12)));
        }
        if crc32fast::hash(&h[..124]) != u32_at(124) {
            return Err("header checksum mismatch".into());
        }
        let mut model = [0u8; 32];
        model.copy_from_slice(&h[16..48]);
        Ok(Header {
            model,
            quant_bits: h[48],
            reason: Reason::from_u8(h[49]),
            tokens: u32_at(52),
            ctx: u32_at(56),
            hits: u32_at(60),
            created: u64_at(64),
            last_used: u64_at(72),
            text_len: u64_at(80),
            map_len: u64_at(88),
            payload_len: u64_at(96),
            meta_crc: u32_at(104),
            payload_crc: u32_at(108),
        })
    }

    fn file_len(&self) -> Option<u64> {
        (HEADER_LEN as u64)
            .checked_add(self.text_len)?
            .checked_add(self.map_len)?
            .checked_add(self.payload_len)
    }
}

fn encode_tool_map(map: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(map.len() as u32).to_le_bytes());
    for (id, dsml) in map {
        out.extend_from_slice(&(id.len() as u32).to_le_bytes());
        out.extend_from_slice(&(dsml.len() as u32).to_le_bytes());
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(dsml.as_bytes());
    }
    out
}

fn decode_tool_map(b: &[u8]) -> std::result::Result<Vec<(String, String)>, String> {
    let mut at = 0usize;
    let mut take = |n: usize| -> std::result::Result<&[u8], String> {
        let s = b.get(at..at + n).ok_or("tool map truncated")?;
        at += n;
        Ok(s)
    };
    let word = |s: &[u8]| u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize;
    let count = word(take(4)?);
    let mut out = Vec::new();
    for _ in 0..count {
        let id_len = word(take(4)?);
        let dsml_len = word(take(4)?);
        if id_len == 0 || id_len > MAX_TOOL_ID_LEN {
            return Err(format!("tool id of {id_len} bytes"));
        }
        let id = String::from_utf8(take(id_len)?.to_vec()).map_err(|_| "tool id not UTF-8")?;
        let dsml = String::from_utf8(take(dsml_len)?.to_vec()).map_err(|_| "DSML not UTF-8")?;
        out.push((id, dsml));
    }
    if at != b.len() {
        return Err("trailing bytes after the tool map".into());
    }
    Ok(out)
}

/// SHA-256 of `data` (for callers building an [`Identity`]).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// `<first 40 hex digits of SHA-256(text)>.kv`.
pub fn file_name(text: &str) -> String {
    let d = Sha256::digest(text.as_bytes());
    let hex: String = d.iter().take(20).map(|b| format!("{b:02x}")).collect();
    format!("{hex}.kv")
}

#[derive(Debug, Clone)]
struct Indexed {
    header: Header,
    text_sha: [u8; 32],
    size: u64,
}

/// Counters the server reports.
#[derive(Debug, Default)]
pub struct StoreStats {
    pub hits: AtomicU64,
    pub saves: AtomicU64,
    pub removed_bad: AtomicU64,
    pub evicted: AtomicU64,
}

pub struct KvStore {
    dir: PathBuf,
    budget: u64,
    identity: Identity,
    reject_different_quant: bool,
    entries: HashMap<String, Indexed>,
    /// Logical clock for LRU order, above every `last_used` seen.
    clock: u64,
    disabled: Option<String>,
    seq: u64,
    pub stats: StoreStats,
    _lock: File,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn warn(msg: &str) {
    eprintln!("ds4-kvstore: warning: {msg}");
}

/// How long [`KvStore::open`] waits for a held lock before reporting it.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

impl KvStore {
    /// Opens (creating, mode 0700) `dir`, takes its lock, drops leftover
    /// temporary files, indexes every valid file (removing bad and foreign ones)
    /// and evicts down to `budget` bytes.
    pub fn open(
        dir: &Path,
        budget: u64,
        identity: Identity,
        reject_different_quant: bool,
    ) -> Result<KvStore> {
        create_dir_private(dir)?;
        let lock_path = dir.join(".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        // A lock that was just released can still look held for a moment: a process
        // forked by another thread of ours shares the lock file's open description
        // until its exec closes it. Retry briefly before calling it another process.
        let mut waited = std::time::Duration::ZERO;
        let step = std::time::Duration::from_millis(20);
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) if waited < LOCK_WAIT => {
                    std::thread::sleep(step);
                    waited += step;
                }
                Err(fs::TryLockError::WouldBlock) => {
                    return Err(StoreError::Locked(dir.to_path_buf()));
                }
                Err(fs::TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
            }
        }
        let mut store = KvStore {
            dir: dir.to_path_buf(),
            budget,
            identity,
            reject_different_quant,
            entries: HashMap::new(),
            clock: 0,
            disabled: None,
            seq: 0,
            stats: StoreStats::default(),
            _lock: lock,
        };
        store.scan()?;
        store.evict(None);
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Bytes of all indexed files.
    pub fn used_bytes(&self) -> u64 {
        self.entries.values().map(|e| e.size).sum()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Why saving is off, if it is.
    pub fn disabled(&self) -> Option<&str> {
        self.disabled.as_deref()
    }

    /// Indexed file names, least recently used first.
    pub fn lru_order(&self) -> Vec<String> {
        let mut v: Vec<(&String, u64)> = self
            .entries
            .iter()
            .map(|(k, e)| (k, e.header.last_used))
            .collect();
        v.sort_by_key(|&(k, t)| (t, k.clone()));
        v.into_iter().map(|(k, _)| k.clone()).collect()
    }

    fn remove_bad(&mut self, name: &str, why: &str) {
        warn(&format!(
            "{}: {why}; removed",
            self.dir.join(name).display()
        ));
        let _ = fs::remove_file(self.dir.join(name));
        self.entries.remove(name);
        self.stats.removed_bad.fetch_add(1, Ordering::Relaxed);
    }

    fn scan(&mut self) -> Result<()> {
        let rd = fs::read_dir(&self.dir).map_err(io(&self.dir))?;
        let mut names = Vec::new();
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.contains(".tmp.") {
                // A save that never reached its rename (we hold the lock, so no
                // live writer owns it).
                let _ = fs::remove_file(e.path());
            } else if name.ends_with(".kv") {
                names.push(name);
            }
        }
        names.sort();
        for name in names {
            match self.read_index(&name) {
                Ok(ix) => {
                    self.clock = self.clock.max(ix.header.last_used);
                    self.entries.insert(name, ix);
                }
                Err(why) => self.remove_bad(&name, &why),
            }
        }
        Ok(())
    }

    /// Header, sizes, identity, key text and tool map of one file.
    fn read_index(&self, name: &str) -> std::result::Result<Indexed, String> {
        let path = self.dir.join(name);
        let mut f = File::open(&path).map_err(|e| e.to_string())?;
        let size = f.metadata().map_err(|e| e.to_string())?.len();
        let mut hb = [0u8; HEADER_LEN];
        f.read_exact(&mut hb)
            .map_err(|_| "shorter than its header".to_string())?;
        let header = Header::decode(&hb)?;
        if header.model != self.identity.model {
            return Err("written for another model".into());
        }
        if header.file_len() != Some(size) {
            return Err(format!(
                "{size} bytes on disk, the header describes {:?} (truncated or extended)",
                header.file_len()
            ));
        }
        if header.text_len > size || header.map_len > size {
            return Err("impossible section sizes".into());
        }
        let mut meta = vec![0u8; (header.text_len + header.map_len) as usize];
        f.read_exact(&mut meta).map_err(|e| e.to_string())?;
        if crc32fast::hash(&meta) != header.meta_crc {
            return Err("key text / tool map checksum mismatch".into());
        }
        let (text, map) = meta.split_at(header.text_len as usize);
        let text = std::str::from_utf8(text).map_err(|_| "key text is not UTF-8".to_string())?;
        if file_name(text) != name {
            return Err("file name does not match its key text".into());
        }
        decode_tool_map(map)?;
        Ok(Indexed {
            text_sha: Sha256::digest(text.as_bytes()).into(),
            header,
            size,
        })
    }

    /// Saves one entry atomically, replacing a file with the same key text, then
    /// evicts least-recently-used files down to the budget.
    pub fn save(&mut self, e: &NewEntry<'_>) -> Result<SaveOutcome> {
        if self.disabled.is_some() {
            return Ok(SaveOutcome::Disabled);
        }
        self.clock += 1;
        let (header, map) = build_header(self.identity, e, self.clock);
        let size = (HEADER_LEN + e.text.len() + map.len() + e.payload.len()) as u64;
        if size as f64 * 1.01 > self.budget as f64 {
            return Ok(SaveOutcome::TooLarge);
        }
        let name = file_name(e.text);
        self.seq += 1;
        let tmp = self
            .dir
            .join(format!(".{name}.tmp.{}.{}", std::process::id(), self.seq));
        let r = write_atomic(
            &tmp,
            &self.dir.join(&name),
            &self.dir,
            &[&header.encode(), e.text.as_bytes(), &map, e.payload],
        );
        if let Err(err) = r {
            let _ = fs::remove_file(&tmp);
            let why = format!(
                "saving to {} failed ({err}); disk KV saving is now off",
                self.dir.display()
            );
            warn(&why);
            self.disabled = Some(why);
            return Err(err);
        }
        self.entries.insert(
            name.clone(),
            Indexed {
                text_sha: Sha256::digest(e.text.as_bytes()).into(),
                header,
                size,
            },
        );
        self.stats.saves.fetch_add(1, Ordering::Relaxed);
        self.evict(Some(&name));
        Ok(SaveOutcome::Saved { bytes: size })
    }

    /// Removes least-recently-used files while over the budget, keeping `keep`.
    fn evict(&mut self, keep: Option<&str>) {
        while self.used_bytes() > self.budget {
            let victim = self
                .lru_order()
                .into_iter()
                .find(|k| Some(k.as_str()) != keep);
            let Some(victim) = victim else { break };
            let _ = fs::remove_file(self.dir.join(&victim));
            self.entries.remove(&victim);
            self.stats.evicted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Removes one file (a consumed entry).
    pub fn remove(&mut self, file: &str) {
        if self.entries.remove(file).is_some() {
            let _ = fs::remove_file(self.dir.join(file));
        }
    }

    /// The longest entry whose key text is a prefix of `prompt`, with at least
    /// `min_tokens` tokens and a context of at most `max_ctx`, verified in full.
    /// Files that fail verification are removed and the next candidate is tried.
    pub fn lookup(&mut self, prompt: &str, min_tokens: u32, max_ctx: u32) -> Option<Hit> {
        let mut cands: Vec<(String, usize)> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                let h = &e.header;
                h.tokens >= min_tokens
                    && h.ctx <= max_ctx
                    && (h.text_len as usize) <= prompt.len()
                    && prompt.is_char_boundary(h.text_len as usize)
                    && (!self.reject_different_quant || h.quant_bits == self.identity.quant_bits)
            })
            .map(|(k, e)| (k.clone(), e.header.text_len as usize))
            .collect();
        cands.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut sha_by_len: HashMap<usize, [u8; 32]> = HashMap::new();
        for (name, len) in cands {
            let want = *sha_by_len
                .entry(len)
                .or_insert_with(|| Sha256::digest(&prompt.as_bytes()[..len]).into());
            if self.entries.get(&name).map(|e| e.text_sha) != Some(want) {
                continue;
            }
            match self.read_full(&name, &prompt[..len]) {
                Ok(hit) => {
                    self.touch(&name);
                    self.stats.hits.fetch_add(1, Ordering::Relaxed);
                    return Some(hit);
                }
                Err(why) => self.remove_bad(&name, &why),
            }
        }
        None
    }

    fn read_full(&self, name: &str, text: &str) -> std::result::Result<Hit, String> {
        let path = self.dir.join(name);
        let bytes = fs::read(&path).map_err(|e| e.to_string())?;
        let (hit, stored) = verify(&bytes, self.identity, name)?;
        if stored != text {
            return Err("key text differs from its index".into());
        }
        Ok(hit)
    }

    /// Marks a file used now: hits + 1 and a new `last_used`, in the index and
    /// in its header (rewritten in place with its checksum).
    fn touch(&mut self, name: &str) {
        self.clock += 1;
        let clock = self.clock;
        let Some(e) = self.entries.get_mut(name) else {
            return;
        };
        e.header.hits = e.header.hits.saturating_add(1);
        e.header.last_used = clock;
        let hb = e.header.encode();
        let path = self.dir.join(name);
        if let Ok(mut f) = OpenOptions::new().write(true).open(&path) {
            let _ = f.seek(SeekFrom::Start(0)).and_then(|_| f.write_all(&hb));
        }
    }

    /// Every tool map of every indexed file, checked (for exact DSML replay
    /// after a restart).
    pub fn tool_maps(&mut self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let names: Vec<String> = self.entries.keys().cloned().collect();
        for name in names {
            let Some(h) = self.entries.get(&name).map(|e| e.header.clone()) else {
                continue;
            };
            if h.map_len <= 4 {
                continue;
            }
            let r = (|| -> std::result::Result<Vec<(String, String)>, String> {
                let mut f = File::open(self.dir.join(&name)).map_err(|e| e.to_string())?;
                let mut meta = vec![0u8; (h.text_len + h.map_len) as usize];
                f.seek(SeekFrom::Start(HEADER_LEN as u64))
                    .map_err(|e| e.to_string())?;
                f.read_exact(&mut meta).map_err(|e| e.to_string())?;
                if crc32fast::hash(&meta) != h.meta_crc {
                    return Err("key text / tool map checksum mismatch".into());
                }
                decode_tool_map(&meta[h.text_len as usize..])
            })();
            match r {
                Ok(m) => out.extend(m),
                Err(why) => self.remove_bad(&name, &why),
            }
        }
        out
    }
}

/// Checks a whole file's bytes (header, identity, exact size, both CRCs, tool
/// map) and returns its entry and key text.
fn verify(
    bytes: &[u8],
    identity: Identity,
    name: &str,
) -> std::result::Result<(Hit, String), String> {
    let hb: &[u8; HEADER_LEN] = bytes
        .get(..HEADER_LEN)
        .and_then(|s| s.try_into().ok())
        .ok_or("shorter than its header")?;
    let h = Header::decode(hb)?;
    if h.model != identity.model {
        return Err("written for another model".into());
    }
    if h.file_len() != Some(bytes.len() as u64) {
        return Err("truncated or extended".into());
    }
    let t_end = HEADER_LEN + h.text_len as usize;
    let m_end = t_end + h.map_len as usize;
    if crc32fast::hash(&bytes[HEADER_LEN..m_end]) != h.meta_crc {
        return Err("key text / tool map checksum mismatch".into());
    }
    if crc32fast::hash(&bytes[m_end..]) != h.payload_crc {
        return Err("payload checksum mismatch".into());
    }
    let text = std::str::from_utf8(&bytes[HEADER_LEN..t_end])
        .map_err(|_| "key text is not UTF-8".to_string())?;
    let tool_map = decode_tool_map(&bytes[t_end..m_end])?;
    let hit = Hit {
        file: name.to_string(),
        reason: h.reason,
        tokens: h.tokens,
        ctx: h.ctx,
        text_len: text.len(),
        tool_map,
        payload: bytes[m_end..].to_vec(),
    };
    Ok((hit, text.to_string()))
}

fn build_header(identity: Identity, e: &NewEntry<'_>, last_used: u64) -> (Header, Vec<u8>) {
    let map = encode_tool_map(e.tool_map);
    let mut meta_crc = crc32fast::Hasher::new();
    meta_crc.update(e.text.as_bytes());
    meta_crc.update(&map);
    let header = Header {
        model: identity.model,
        quant_bits: identity.quant_bits,
        reason: e.reason,
        tokens: e.tokens,
        ctx: e.ctx,
        hits: 0,
        created: now_secs(),
        last_used,
        text_len: e.text.len() as u64,
        map_len: map.len() as u64,
        payload_len: e.payload.len() as u64,
        meta_crc: meta_crc.finalize(),
        payload_crc: crc32fast::hash(e.payload),
    };
    (header, map)
}

/// Writes one entry as a standalone file in the same format (the CLI's
/// `/save`), atomically: tmp file, fsync, rename.
pub fn write_file(path: &Path, identity: Identity, e: &NewEntry<'_>) -> Result<u64> {
    let (header, map) = build_header(identity, e, 0);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let parts: [&[u8]; 4] = [&header.encode(), e.text.as_bytes(), &map, e.payload];
    let r = write_atomic(&tmp, path, &dir, &parts);
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r.map(|()| (HEADER_LEN + e.text.len() + map.len() + e.payload.len()) as u64)
}

/// Reads a file written by [`write_file`] (or a store file) for `identity`,
/// verified in full; returns the entry and its key text.
pub fn read_file(path: &Path, identity: Identity) -> Result<(Hit, String)> {
    let bytes = fs::read(path).map_err(io(path))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    verify(&bytes, identity, &name)
        .map_err(|why| StoreError::Bad(format!("{}: {why}", path.display())))
}

fn create_dir_private(dir: &Path) -> Result<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir).map_err(io(dir))
}

/// tmp → write → fsync → rename → fsync(dir).
fn write_atomic(tmp: &Path, dst: &Path, dir: &Path, parts: &[&[u8]]) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)
        .map_err(io(tmp))?;
    for p in parts {
        f.write_all(p).map_err(io(tmp))?;
    }
    f.sync_all().map_err(io(tmp))?;
    drop(f);
    fs::rename(tmp, dst).map_err(io(dst))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
