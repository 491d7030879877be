//! The GGUF-metadata constructor gives the same tokenizer as tokenizer.json.

mod common;

use common::{Rng, added_contents, hf_encode, oracle, ours, random_text, show, tokenizer_json};
use ds4_tokenizer::{GgufTokenType, SpecialMode, Tokenizer, TokenizerError};

struct Parts {
    tokens: Vec<String>,
    merges: Vec<String>,
    types: Vec<i32>,
}

/// What a GGUF converter writes: id-ordered token strings, `"a b"` merges, and llama.cpp
/// token types (special added tokens are Control, other added tokens UserDefined).
fn parts_from_json() -> Parts {
    let json: serde_json::Value = serde_json::from_str(tokenizer_json()).expect("json");
    let vocab = json["model"]["vocab"].as_object().expect("vocab");
    let mut tokens = vec![String::new(); 129_280];
    let mut types = vec![GgufTokenType::Normal as i32; 129_280];
    for (token, id) in vocab {
        tokens[id.as_u64().expect("id") as usize] = token.clone();
    }
    for t in json["added_tokens"].as_array().expect("added") {
        let id = t["id"].as_u64().expect("id") as usize;
        tokens[id] = t["content"].as_str().expect("content").to_owned();
        types[id] = if t["special"] == true {
            GgufTokenType::Control as i32
        } else {
            GgufTokenType::UserDefined as i32
        };
    }
    assert!(tokens.iter().all(|t| !t.is_empty()), "no gaps in V4 ids");
    let merges = json["model"]["merges"]
        .as_array()
        .expect("merges")
        .iter()
        .map(|m| m.as_str().expect("merge string").to_owned())
        .collect();
    Parts {
        tokens,
        merges,
        types,
    }
}

fn check_against_hf(tok: &Tokenizer, seed: u64) {
    let added = added_contents();
    let mut rng = Rng::new(seed);
    for i in 0..10_000 {
        let text = random_text(&mut rng, &added);
        assert_eq!(
            tok.encode(&text, SpecialMode::Recognize),
            hf_encode(oracle(), &text),
            "#{i} {}",
            show(&text)
        );
    }
}

#[test]
fn gguf_parts_without_token_types_equal_json() {
    let p = parts_from_json();
    let t0 = std::time::Instant::now();
    let tok = Tokenizer::from_gguf_parts(&p.tokens, &p.merges, None).expect("load");
    eprintln!("from_gguf_parts: {:?} (dev profile)", t0.elapsed());
    let json_tok = ours();
    // The built-in V4 layout reproduces every added token and flag of the JSON.
    assert_eq!(tok.added_tokens(), json_tok.added_tokens());
    assert_eq!(tok.vocab_size(), json_tok.vocab_size());
    assert_eq!(tok.specials(), json_tok.specials());
    for id in 0..tok.vocab_size() as u32 {
        assert_eq!(tok.token_to_piece(id), json_tok.token_to_piece(id));
        assert_eq!(tok.token_bytes(id), json_tok.token_bytes(id));
    }
    check_against_hf(&tok, 11);
}

#[test]
fn gguf_parts_with_token_types_match_hf() {
    let p = parts_from_json();
    let tok = Tokenizer::from_gguf_parts(&p.tokens, &p.merges, Some(&p.types)).expect("load");
    let json_tok = ours();
    let ids = |t: &Tokenizer| {
        t.added_tokens()
            .iter()
            .map(|a| (a.id, a.special))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&tok), ids(json_tok));
    // Types carry no `normalized` flag; with V4's no-op normalizer it only decides which
    // of two overlapping tokens wins, and no V4 added token overlaps one of the other
    // class, so the ids agree with HF anyway.
    check_against_hf(&tok, 12);
}

#[test]
fn gguf_parts_errors() {
    let p = parts_from_json();
    let short_types = &p.types[..10];
    assert!(matches!(
        Tokenizer::from_gguf_parts(&p.tokens, &p.merges, Some(short_types)),
        Err(TokenizerError::TokenTypes(_))
    ));
    // Without types, only the V4 layout is accepted.
    let mut fewer = p.tokens.clone();
    fewer.push("extra".into());
    assert!(matches!(
        Tokenizer::from_gguf_parts(&fewer, &p.merges, None),
        Err(TokenizerError::TokenTypes(_))
    ));
    let mut merges = p.merges.clone();
    merges[5] = "nospace".into();
    assert!(matches!(
        Tokenizer::from_gguf_parts(&p.tokens, &merges, None),
        Err(TokenizerError::BadMerge { index: 5, .. })
    ));
    merges[5] = "Ġ 😀😀".into();
    assert!(matches!(
        Tokenizer::from_gguf_parts(&p.tokens, &merges, None),
        Err(TokenizerError::BadMerge { index: 5, .. })
    ));
    let mut tokens = p.tokens.clone();
    tokens[128_822] = "</thinking>".into();
    assert_eq!(
        Tokenizer::from_gguf_parts(&tokens, &p.merges, None).err(),
        Some(TokenizerError::MissingToken("</think>".into()))
    );
}

#[test]
fn json_errors() {
    assert!(matches!(
        Tokenizer::from_json("{"),
        Err(TokenizerError::Json(_))
    ));
    let mut json: serde_json::Value = serde_json::from_str(tokenizer_json()).expect("json");
    json["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\p{N}".into();
    assert!(matches!(
        Tokenizer::from_json(&json.to_string()),
        Err(TokenizerError::Unsupported(_))
    ));
}
