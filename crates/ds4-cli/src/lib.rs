//! The `ds4` and `ds4-quantize` command-line programs. They talk to the model
//! only through the GGUF reader, the tokenizer, the chat encoder and (for
//! generation) the engine's session API.

pub mod args;
pub mod convert;
pub mod demo;
pub mod device;
pub mod diagnostics;
pub mod generate;
pub mod inspect;
pub mod layout;
pub mod memory;
pub mod model_path;
pub mod repl;
pub mod synth_values;
pub mod synthetic;
pub mod tokenizer_meta;
pub mod tokens;
