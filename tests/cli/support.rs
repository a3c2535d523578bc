//! Running the `hookline` binary: a home and config directory of its own, none of the
//! caller's `HOOKLINE_*` target variables, and its exit status and output collected.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Stdout as JSON; fails the test when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\n{}",
                self.stdout, self.stderr
            )
        })
    }

    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "exit {}:\n{}\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

/// A user of the command: a home directory (and config directory) of its own.
pub struct User {
    pub home: tempfile::TempDir,
}

impl User {
    pub fn new() -> Self {
        User {
            home: tempfile::tempdir().unwrap(),
        }
    }

    pub fn config_file(&self) -> std::path::PathBuf {
        self.home
            .path()
            .join("config")
            .join("hookline")
            .join("config.toml")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookline"));
        cmd.args(args)
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join("config"))
            .env_remove("HOOKLINE_URL")
            .env_remove("HOOKLINE_KEY")
            .env_remove("HOOKLINE_PROFILE")
            .env_remove("NO_COLOR")
            .env_remove("CLICOLOR_FORCE")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs to the end, with `stdin` as its input.
    pub async fn run_with(
        &self,
        args: &[&str],
        envs: &[(&str, &str)],
        stdin: Option<&[u8]>,
    ) -> Out {
        let mut cmd = self.command(args);
        cmd.envs(envs.iter().copied());
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("the binary starts");
        if let Some(input) = stdin {
            use tokio::io::AsyncWriteExt;
            let mut pipe = child.stdin.take().unwrap();
            // A command that stops before reading all of it (a usage error) closes the pipe.
            let _ = pipe.write_all(input).await;
            drop(pipe);
        }
        let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
            .await
            .expect("the command finishes")
            .unwrap();
        Out {
            code: out.status.code().expect("exited, not killed"),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }

    pub async fn run(&self, args: &[&str]) -> Out {
        self.run_with(args, &[], None).await
    }

    /// `args` against a target given by flags.
    pub async fn at(&self, base: &str, key: &str, args: &[&str]) -> Out {
        let mut all = args.to_vec();
        all.extend(["--url", base, "--key", key]);
        self.run(&all).await
    }

    /// Starts a command that runs until killed, its stdout read line by line.
    pub fn spawn(&self, args: &[&str]) -> Running {
        let mut cmd = self.command(args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = cmd.spawn().expect("the binary starts");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Running { child, lines }
    }
}

pub struct Running {
    pub child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Running {
    /// The next line of output, within a bound that only catches a hang.
    pub async fn line(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(30), self.lines.next_line())
            .await
            .expect("a line within 30 s")
            .unwrap()
            .expect("the command is still running")
    }

    /// Reads lines until one satisfies `want`, and returns it with those before it.
    pub async fn until(&mut self, want: impl Fn(&str) -> bool) -> (String, Vec<String>) {
        let mut before = Vec::new();
        loop {
            let line = self.line().await;
            if want(&line) {
                return (line, before);
            }
            before.push(line);
        }
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
