//! ds4-engine: DeepSeek V4 Flash on the CPU.
//!
//! * [`ModelConfig`] reads every size from GGUF metadata (or an official
//!   `config.json`) and checks it; nothing below hard-codes a Flash dimension.
//! * [`Model`] binds weights through a [`WeightSource`] and runs the forward pass
//!   ([`layer`] holds one decoder layer top to bottom, with the spec's names).
//! * [`Session`] keeps a token sequence and its KV state.
//! * [`names`] maps official checkpoint names to ds4 GGUF names; [`build_gguf`]
//!   writes any [`WeightSource`] as a ds4 GGUF.
//!
//! ```
//! use ds4_engine::{ForwardOptions, Model, Session};
//! # fn main() -> Result<(), ds4_engine::EngineError> {
//! let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny-v4");
//! let model = Model::from_official_dir(&dir)?; // or Model::from_gguf(path)
//! let mut session = Session::new(&model, 4096, ForwardOptions::default());
//! session.sync(&[17, 42, 99])?; // prefill
//! let logits = session.logits()?;
//! let next = (0..logits.len()).fold(0, |b, i| if logits[i] > logits[b] { i } else { b });
//! session.decode(next as u32)?; // one more token
//! session.sync(&[17, 42, 7])?; // rewinds to the common prefix [17, 42]
//! assert_eq!(session.tokens(), &[17, 42, 7]);
//! # Ok(()) }
//! ```

pub mod backend;
pub mod cache;
pub mod config;
pub mod error;
pub mod gguf;
pub mod hc;
pub mod kvpack;
pub mod layer;
pub mod model;
pub mod names;
pub mod official;
pub mod ops;
pub mod payload;
pub mod qat;
pub mod sampling;
pub mod session;
pub mod synthetic;
pub mod weights;

pub use backend::{Backend, CpuBackend, ForwardState, StateSnapshot};
pub use cache::KvCache;
pub use config::{AttnKind, MetaValue, ModelConfig};
pub use error::{EngineError, Result};
pub use gguf::{GgufSource, build_gguf};
pub use layer::ForwardOptions;
pub use model::{LogitsFor, Model, Trace};
pub use official::OfficialCheckpoint;
pub use sampling::{Sampler, SamplingParams};
pub use session::{Session, Snapshot};
pub use synthetic::SyntheticSource;
pub use weights::{Mat, MatRaw, Tensor, TensorData, WeightSource, Weights};
