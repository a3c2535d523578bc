//! Where the target and key come from: `hookline login` profiles (a file of mode 0600 in
//! the user's config directory), `HOOKLINE_URL`/`HOOKLINE_KEY`, and flags over both.

use crate::helpers::spawn_app;
use crate::support::User;

#[tokio::test]
async fn login_saves_a_private_profile_that_later_commands_use() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let other = app.create_tenant("b").await;
    app.create_endpoint(&t.key, serde_json::json!({"url": "http://127.0.0.1:9/a"}))
        .await;
    let user = User::new();
    let b = app.base.as_str();

    // A bad key is refused by the API and nothing is saved.
    let out = user.run(&["login", "--url", b, "--key", "hk_wrong"]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(!user.config_file().exists());

    user.run(&["login", "--url", b, "--key", &t.key]).await.ok();
    let file = user.config_file();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    // The default profile: no flags needed.
    let list = user.run(&["endpoints", "list", "--json"]).await.ok().json();
    assert_eq!(list.as_array().unwrap().len(), 1);

    // A second, named profile becomes the default; the first stays reachable by name.
    user.run(&["login", "--url", b, "--key", &other.key, "--as", "other"])
        .await
        .ok();
    let list = user.run(&["endpoints", "list", "--json"]).await.ok().json();
    assert!(list.as_array().unwrap().is_empty());
    let list = user
        .run(&["endpoints", "list", "--json", "--profile", "default"])
        .await
        .ok()
        .json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    // The environment, then flags, win over the profile.
    let env = [("HOOKLINE_KEY", t.key.as_str())];
    let list = user
        .run_with(&["endpoints", "list", "--json"], &env, None)
        .await
        .ok()
        .json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let out = user
        .run_with(&["endpoints", "list", "--key", "hk_flag-wins"], &env, None)
        .await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    // The key can come on stdin, so that it stays out of the shell's history.
    let out = user
        .run_with(
            &["login", "--url", b, "--as", "piped"],
            &[],
            Some(format!("{}\n", t.key).as_bytes()),
        )
        .await
        .ok();
    assert!(out.stdout.contains("piped"), "{}", out.stdout);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("[profiles.piped]") && text.contains("[profiles.other]"),
        "{text}"
    );

    // A profile that does not exist, or no target at all, is a usage error.
    let out = user.run(&["endpoints", "list", "--profile", "nope"]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    let out = User::new().run(&["endpoints", "list"]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("hookline login"), "{}", out.stderr);
    let out = user
        .run(&["login", "--url", "not a url", "--key", "k"])
        .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    app.stop().await;
}
