//! Differential tests against Hugging Face `tokenizers` loaded from the same JSON.
//!
//! 200,000 generated strings in four parts (so the parts run in parallel) plus raw
//! mode, decoding and added-token flag variants. Every part checks: identical ids,
//! decode(encode(x)) == x, and the streaming decoder reproducing decode() chunk by chunk
//! without ever emitting a partial character.

mod common;

use common::{
    Rng, added_contents, hf_encode, hf_from, oracle, ours, random_text, show, tokenizer_json,
};
use ds4_tokenizer::{SpecialMode, StreamDecoder, Tokenizer};

const PER_PART: usize = 50_000;

struct Stats {
    strings: usize,
    tokens: usize,
    added_hits: usize,
}

fn check_corpus(seed: u64, count: usize) -> Stats {
    let tok = ours();
    let hf = oracle();
    let added = added_contents();
    let mut rng = Rng::new(seed);
    let mut mismatches = Vec::new();
    let mut stats = Stats {
        strings: 0,
        tokens: 0,
        added_hits: 0,
    };
    for i in 0..count {
        let text = random_text(&mut rng, &added);
        let ids = tok.encode(&text, SpecialMode::Recognize);
        let expected = hf_encode(hf, &text);
        if ids != expected {
            if mismatches.len() < 5 {
                mismatches.push(format!(
                    "#{i} {}\n  ours {ids:?}\n  hf   {expected:?}",
                    show(&text)
                ));
            }
            continue;
        }
        stats.strings += 1;
        stats.tokens += ids.len();
        stats.added_hits += ids.iter().filter(|&&id| tok.is_added(id)).count();

        let decoded = tok.decode(&ids).expect("decode");
        assert_eq!(decoded, text, "#{i} round trip");

        let mut dec = StreamDecoder::new();
        let mut streamed = String::new();
        for &id in &ids {
            // Each chunk is a complete `String`, so no partial UTF-8 can get out; check
            // that chunks only ever end on character boundaries of the final text.
            let chunk = dec.push(tok, id).expect("push");
            let at = streamed.len();
            assert!(
                text.is_char_boundary(at + chunk.len()),
                "#{i} stream boundary"
            );
            assert_eq!(
                text.get(at..at + chunk.len()),
                Some(chunk.as_str()),
                "#{i} chunk"
            );
            streamed.push_str(&chunk);
        }
        streamed.push_str(&dec.finish());
        assert_eq!(streamed, text, "#{i} stream");
    }
    assert!(
        mismatches.is_empty(),
        "{} of {count} differ from HF, first ones:\n{}",
        count - stats.strings,
        mismatches.join("\n")
    );
    stats
}

fn run_part(seed: u64) {
    let s = check_corpus(seed, PER_PART);
    eprintln!(
        "seed {seed}: {} strings, {} tokens, {} added-token hits, 0 mismatches",
        s.strings, s.tokens, s.added_hits
    );
    assert_eq!(s.strings, PER_PART);
    assert!(s.tokens > PER_PART * 10 && s.added_hits > PER_PART / 20);
}

#[test]
fn corpus_part_1_matches_hf() {
    run_part(1);
}

#[test]
fn corpus_part_2_matches_hf() {
    run_part(2);
}

#[test]
fn corpus_part_3_matches_hf() {
    run_part(3);
}

#[test]
fn corpus_part_4_matches_hf() {
    run_part(4);
}

/// The added-token list removed from the JSON gives HF's plain BPE: our raw mode.
#[test]
fn raw_mode_matches_hf_without_added_tokens() {
    let mut json: serde_json::Value = serde_json::from_str(tokenizer_json()).expect("json");
    json["added_tokens"] = serde_json::Value::Array(vec![]);
    let hf = hf_from(&json.to_string());
    let tok = ours();
    let added = added_contents();
    let mut rng = Rng::new(99);
    let mut with_added_text = 0;
    for i in 0..20_000 {
        let text = random_text(&mut rng, &added);
        let ids = tok.encode(&text, SpecialMode::Raw);
        assert_eq!(ids, hf_encode(&hf, &text), "#{i} {}", show(&text));
        assert!(ids.iter().all(|&id| !tok.is_added(id)));
        if added.iter().any(|a| text.contains(a.as_str())) {
            with_added_text += 1;
        }
    }
    assert!(with_added_text > 1000, "{with_added_text}");
}

/// Arbitrary id sequences (split characters, lone continuation bytes, added tokens)
/// decode exactly like HF, including where U+FFFD goes; streaming agrees.
#[test]
fn decode_of_random_ids_matches_hf() {
    let tok = ours();
    let hf = oracle();
    let mut rng = Rng::new(7);
    let n = tok.vocab_size() as u32;
    let mut replaced = 0;
    for i in 0..20_000 {
        let len = 1 + rng.below(12);
        let ids: Vec<u32> = (0..len)
            .map(|_| {
                if rng.chance(70) {
                    rng.range(0, 600) // mostly byte tokens and short pieces
                } else {
                    rng.range(0, n - 1)
                }
            })
            .collect();
        let ours_text = tok.decode(&ids).expect("decode");
        let hf_text = hf.decode(&ids, false).expect("HF decode");
        assert_eq!(ours_text, hf_text, "#{i} {ids:?}");
        let skip = tok.decode_skip_special(&ids).expect("decode");
        assert_eq!(
            skip,
            hf.decode(&ids, true).expect("HF decode"),
            "#{i} skip {ids:?}"
        );
        let mut dec = StreamDecoder::new();
        let mut streamed = String::new();
        for &id in &ids {
            streamed.push_str(&dec.push(tok, id).expect("push"));
        }
        streamed.push_str(&dec.finish());
        assert_eq!(streamed, ours_text, "#{i} stream {ids:?}");
        replaced += usize::from(ours_text.contains('\u{FFFD}'));
    }
    assert!(replaced > 1000, "{replaced}");
}

/// HF's added-token flags (lstrip, rstrip, single_word, normalized) are all false or
/// fixed in the V4 file; flip them on some tokens and compare both sides again.
#[test]
fn added_token_flags_match_hf() {
    let mut json: serde_json::Value = serde_json::from_str(tokenizer_json()).expect("json");
    let flips = [
        (128_803, "lstrip"),
        (128_804, "rstrip"),
        (128_821, "single_word"),
        (128_822, "lstrip"),
        (128_822, "rstrip"),
        (128_825, "single_word"),
        (0, "normalized"),
        (128_828, "normalized"),
    ];
    let list = json["added_tokens"].as_array_mut().expect("list");
    for (id, flag) in flips {
        let t = list
            .iter_mut()
            .find(|t| t["id"] == id)
            .expect("token present");
        let old = t[flag].as_bool().expect("bool flag");
        t[flag] = serde_json::Value::Bool(!old);
    }
    let text = json.to_string();
    let tok = Tokenizer::from_json(&text).expect("ours loads");
    let hf = hf_from(&text);
    let added = added_contents();
    let mut rng = Rng::new(1234);
    let specials = [
        "<｜User｜>",
        "<｜Assistant｜>",
        "<think>",
        "</think>",
        "｜DSML｜",
    ];
    for i in 0..5_000 {
        let mut s = random_text(&mut rng, &added);
        // Put the flagged tokens next to spaces and word characters often.
        for _ in 0..3 {
            let at = (0..=s.len())
                .filter(|&k| s.is_char_boundary(k))
                .nth(rng.below(4))
                .unwrap_or(0);
            let pad = *rng.pick(&["", " ", "  ", "\n", "a", "_", "é"]);
            s.insert_str(at, &format!("{pad}{}{pad}", rng.pick(&specials)));
        }
        assert_eq!(
            tok.encode(&s, SpecialMode::Recognize),
            hf_encode(&hf, &s),
            "#{i} {}",
            show(&s)
        );
    }
}

/// `encode_pieces` with text parts between special ids equals HF on the concatenation.
#[test]
fn encode_pieces_equals_hf_on_concatenation() {
    let tok = ours();
    let hf = oracle();
    let specials: Vec<u32> = {
        let s = tok.specials();
        vec![
            s.bos,
            s.eos,
            s.user,
            s.assistant,
            s.think_start,
            s.think_end,
            s.dsml,
            128_828,
        ]
    };
    // No added-token text inside the parts: that is what `Piece::Text` is for.
    let no_added = ["plain".to_owned()];
    let mut rng = Rng::new(4242);
    for i in 0..3_000 {
        let mut pieces_text = Vec::new();
        let mut joined = String::new();
        let mut ids_between = Vec::new();
        for _ in 0..1 + rng.below(4) {
            let id = *rng.pick(&specials);
            let text = random_text(&mut rng, &no_added);
            joined.push_str(tok.token_to_piece(id).expect("special piece"));
            joined.push_str(&text);
            ids_between.push(id);
            pieces_text.push(text);
        }
        let mut pieces = Vec::new();
        for (id, text) in ids_between.iter().zip(&pieces_text) {
            pieces.push(ds4_tokenizer::Piece::Special(*id));
            pieces.push(ds4_tokenizer::Piece::Text(text));
        }
        let ids = tok.encode_pieces(&pieces).expect("encode pieces");
        assert_eq!(ids, hf_encode(hf, &joined), "#{i} {}", show(&joined));
    }
}
