//! What every subcommand shares: colours only where wanted, `--help` with an example,
//! completions, usage errors (exit 2), and `serve` as local mode.

use crate::helpers::spawn_app;
use crate::support::User;

const ESC: char = '\u{1b}';

#[tokio::test]
async fn colours_only_when_wanted_and_never_under_no_color() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    app.create_endpoint(&t.key, serde_json::json!({"url": "http://127.0.0.1:9/a"}))
        .await;
    let user = User::new();
    let args = ["endpoints", "list", "--url", &app.base, "--key", &t.key];
    // Piped: plain text.
    let plain = user.run(&args).await.ok().stdout;
    assert!(
        plain.contains("active") && !plain.contains(ESC),
        "{plain:?}"
    );
    // Colours where the terminal is (forced here, as a terminal would have them)...
    let forced = user
        .run_with(&args, &[("CLICOLOR_FORCE", "1")], None)
        .await
        .ok()
        .stdout;
    assert!(forced.contains(ESC), "{forced:?}");
    // ...and never under NO_COLOR.
    let off = user
        .run_with(&args, &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")], None)
        .await
        .ok()
        .stdout;
    assert!(!off.contains(ESC), "{off:?}");
    // The same rows either way.
    let strip = |s: &str| {
        let mut out = String::new();
        let mut skipping = false;
        for c in s.chars() {
            match (skipping, c) {
                (_, ESC) => skipping = true,
                (true, 'm') => skipping = false,
                (true, _) => {}
                (false, c) => out.push(c),
            }
        }
        out
    };
    assert_eq!(strip(&forced), plain);
    app.stop().await;
}

#[tokio::test]
async fn every_subcommand_has_help_with_an_example() {
    let user = User::new();
    let groups: &[&[&str]] = &[
        &["serve"],
        &["login"],
        &["tenants", "create"],
        &["tenants", "get"],
        &["tenants", "sub-accounts"],
        &["tenants", "create-sub-account"],
        &["keys", "list"],
        &["keys", "get"],
        &["keys", "create"],
        &["keys", "revoke"],
        &["domains", "list"],
        &["domains", "get"],
        &["domains", "create"],
        &["domains", "delete"],
        &["endpoints", "list"],
        &["endpoints", "get"],
        &["endpoints", "create"],
        &["endpoints", "update"],
        &["endpoints", "delete"],
        &["endpoints", "secret"],
        &["endpoints", "rotate"],
        &["endpoints", "public-key"],
        &["endpoints", "test"],
        &["event-types", "list"],
        &["event-types", "get"],
        &["event-types", "create"],
        &["events", "publish"],
        &["messages", "list"],
        &["messages", "get"],
        &["messages", "attempts"],
        &["messages", "tail"],
        &["replay", "message"],
        &["replay", "endpoint"],
        &["listen"],
        &["verify"],
        &["completions"],
    ];
    for group in groups {
        let mut args = group.to_vec();
        args.push("--help");
        let out = user.run(&args).await.ok();
        assert!(out.stdout.contains("Example"), "{group:?}:\n{}", out.stdout);
        assert!(
            out.stdout.contains(&format!("hookline {}", group[0])),
            "{group:?}:\n{}",
            out.stdout
        );
    }
}

#[tokio::test]
async fn completions_for_each_shell_and_usage_errors_exit_2() {
    let user = User::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = user.run(&["completions", shell]).await.ok();
        for word in ["endpoints", "event-types", "replay", "listen"] {
            assert!(out.stdout.contains(word), "{shell} lacks {word}");
        }
    }
    for args in [
        &["completions", "tcsh"][..],
        &["endpoints"][..],
        &["no-such-command"][..],
        &["messages", "list", "--unknown-flag"][..],
        &["--listen", "127.0.0.1:0", "endpoints", "list"][..],
    ] {
        let out = user.run(args).await;
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "{args:?}: {}", out.stdout);
    }
}

/// `hookline serve` (and `hookline` alone, as `cargo run` starts it) is local mode, taking
/// its settings from flags and the environment as before.
#[tokio::test]
async fn serve_starts_local_mode() {
    let user = User::new();
    for args in [&["serve"][..], &[][..]] {
        let data = user.home.path().join(format!("data-{}.db", args.len()));
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let listen = format!("127.0.0.1:{port}");
        let mut all = args.to_vec();
        all.extend(["--listen", &listen]);
        let mut cmd = user.command(&all);
        cmd.env("HOOKLINE_DATA", &data)
            .env("HOOKLINE_OPERATOR_KEY", "hkop_serve-test")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().unwrap();
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        // Its log lines come first.
        let line = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            loop {
                let line = lines.next_line().await.unwrap().expect("local mode runs");
                if line.starts_with("Hookline listening") {
                    return line;
                }
            }
        })
        .await
        .expect("local mode starts");
        assert_eq!(line, format!("Hookline listening on http://{listen}"));
        let out = user
            .at(
                &format!("http://{listen}"),
                "hkop_serve-test",
                &["tenants", "create", "x", "--json"],
            )
            .await
            .ok()
            .json();
        assert!(out["api_key"].is_string());
        assert!(data.exists());
        child.kill().await.unwrap();
    }
}
