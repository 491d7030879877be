//! The interactive chat driven through a pseudo-terminal, as a person uses it:
//! several turns, the slash commands, and Ctrl+C in the middle of a reply.

use std::process::Command;

use rexpect::session::spawn_command;

/// The number in `TEXT<number>SUFFIX` found by an `exp_regex` match.
fn number_in(matched: &str) -> usize {
    let digits: String = matched
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().unwrap()
}

#[test]
fn repl_turns_commands_and_ctrl_c() {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ds4"));
    cmd.args(["-n", "100000", "--temp", "0", "-c", "8192"])
        .env(
            "DS4_CACHE_DIR",
            std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ds4-demo-cache"),
        )
        .env("HOME", home.path())
        .current_dir(env!("CARGO_TARGET_TMPDIR"));
    let mut p = spawn_command(cmd, Some(120_000)).unwrap();
    p.exp_string("/think-max").unwrap();
    p.exp_string("ds4> ").unwrap();

    // A long reply (-n 100000) interrupted with Ctrl+C while it streams.
    p.send_line("Raccontami una lunga storia").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    p.send_control('c').unwrap();
    p.exp_string("[interrupted]").unwrap();
    let (_, m) = p.exp_regex(r"generated, [0-9]+/8192 context").unwrap();
    let used = number_in(&m);
    p.exp_string("ds4> ").unwrap();

    p.send_line("/nothink").unwrap();
    p.exp_string("Thinking mode: off").unwrap();
    p.send_line(&format!("/ctx {}", used - 1)).unwrap();
    p.exp_string("too small for the conversation").unwrap();
    // A smaller context: the next turn re-reads the whole conversation into
    // the new session and stops at the end of the context.
    // Room for the new turn's prompt (5 tokens: the user turn "Ciao" and the assistant
    // prefix) and 2 reply tokens: the reply runs into the end of the context whatever
    // the model would say (a trained model may otherwise end its reply just before).
    let n = used + 7;
    p.send_line(&format!("/ctx {n}")).unwrap();
    p.exp_string(&format!("Context: {n} tokens")).unwrap();
    p.exp_string("ds4> ").unwrap();
    p.send_line("Ciao").unwrap();
    let (_, m) = p.exp_regex(r"\([0-9]+ new prompt tokens").unwrap();
    let prefilled = number_in(&m);
    assert!(
        prefilled > used,
        "the new session re-reads the transcript ({prefilled} <= {used})"
    );
    // Generation stops one short of the end and the closing EOS fills it.
    p.exp_string(&format!("generated, {n}/{n} context"))
        .unwrap();
    p.send_line("/ctx 4096").unwrap();
    p.exp_string("Context: 4096 tokens").unwrap();
    p.send_line("/bogus").unwrap();
    p.exp_string("unknown command /bogus").unwrap();
    p.send_line("/help").unwrap();
    p.exp_string("/read FILE").unwrap();
    p.send_line("/quit").unwrap();
    p.exp_eof().unwrap();
    let history = std::fs::read_to_string(home.path().join(".ds4_history")).unwrap();
    assert!(history.contains("Raccontami una lunga storia") && history.contains("/nothink"));
}
