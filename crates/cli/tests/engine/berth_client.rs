//! berth's own docker-compatible CLI against `berth serve`: the same verbs,
//! output and exit codes as docker's, the daemon started on demand, and
//! image verbs going through the daemon that holds the store.

use super::*;

#[test]
fn berth_cli_runs_and_manages_containers() {
    let Some(d) = Daemon::start() else { return };
    // Attached run: output on the right streams, the container's exit code.
    assert_eq!(d.bok(&["run", "--rm", "busybox", "echo", "hi"]), "hi\n");
    let o = d.b(&["run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!((o.status.code(), text(&o.stdout), text(&o.stderr)), (Some(3), "out\n".into(), "err\n".into()));
    let o = d.b(&["run", "--rm", "busybox", "no-such-program"]);
    assert_eq!(o.status.code(), Some(127), "{}", text(&o.stderr));
    // Engine-side refusals are 125, with the daemon's message.
    let o = d.b(&["run", "--rm", "-p", "8080:80", "busybox", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(text(&o.stderr).contains("bridge networking"), "{}", text(&o.stderr));
    assert_eq!(d.bok(&["ps", "-aq"]), "", "--rm left a container behind");

    // Detached: ps, logs, exec, inspect, top, stop, rm.
    let id = d.bok(&["run", "-d", "--name", "web", "-l", "k=v", "busybox", "sh", "-c", "echo started; exec sleep 300"]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "run -d prints the full id: {id:?}");
    let ps = d.bok(&["ps"]);
    let header = ps.lines().next().unwrap_or_default();
    for col in ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"] {
        assert!(header.contains(col), "ps header {header:?} lacks {col}");
    }
    assert!(ps.contains(&id[..12]) && ps.contains(" web\n"), "{ps}");
    assert_eq!(d.bok(&["ps", "--format", "{{.Names}} {{.State}} {{.Labels}}"]), "web running k=v\n");
    let json_row: serde_json::Value = serde_json::from_str(d.bok(&["ps", "--format", "json"]).trim()).expect("ps json");
    assert_eq!(json_row["Names"], "web");
    d.wait_for("web", "{{.State.Status}}", "running");
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.bok(&["logs", "web"]) != "started\n" {
        assert!(Instant::now() < deadline, "logs never showed the output");
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = d.b(&["exec", "web", "sh", "-c", "echo in-exec; exit 4"]);
    assert_eq!((o.status.code(), text(&o.stdout)), (Some(4), "in-exec\n".into()));
    assert_eq!(d.bok(&["exec", "-e", "X=1", "-w", "/tmp", "web", "sh", "-c", "echo $X $PWD"]), "1 /tmp\n");
    assert_eq!(d.bok(&["inspect", "-f", "{{.Name}} {{index .Config.Labels \"k\"}}", "web"]), "/web v\n");
    let full: serde_json::Value = serde_json::from_str(&d.bok(&["inspect", "web"])).expect("inspect json");
    assert_eq!(full[0]["Id"], id);
    assert!(d.bok(&["top", "web"]).contains("sleep 300"));
    d.bok(&["pause", "web"]);
    d.wait_for("web", "{{.State.Status}}", "paused");
    d.bok(&["unpause", "web"]);
    d.bok(&["rename", "web", "w2"]);
    assert_eq!(d.bok(&["stop", "-t", "1", "w2"]), "w2\n");
    assert_eq!(d.bok(&["wait", "w2"]), "137\n");
    assert!(d.bok(&["ps", "-a"]).contains("Exited (137)"));
    let o = d.b(&["inspect", "no-such-thing"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("No such object: no-such-thing"));
    assert_eq!(d.bok(&["rm", "w2"]), "w2\n");
    let o = d.b(&["rm", "w2"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).starts_with("Error response from daemon: "), "{}", text(&o.stderr));

    // stdin with -i; create + start -a.
    let mut c = d.berth(&["run", "-i", "--rm", "busybox", "sh", "-c", "read x; echo got $x"]);
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn");
    use std::io::Write as _;
    child.stdin.take().expect("stdin").write_all(b"hello\n").expect("write");
    let o = child.wait_with_output().expect("wait");
    assert_eq!(text(&o.stdout), "got hello\n", "{}", text(&o.stderr));
    d.bok(&["create", "--name", "later", "busybox", "sh", "-c", "echo from-start; exit 2"]);
    let o = d.b(&["start", "-a", "later"]);
    assert_eq!((o.status.code(), text(&o.stdout)), (Some(2), "from-start\n".into()));
    d.bok(&["rm", "later"]);

    // Volumes.
    assert_eq!(d.bok(&["volume", "create", "data"]), "data\n");
    d.bok(&["run", "--rm", "-v", "data:/d", "busybox", "sh", "-c", "echo kept > /d/f"]);
    assert_eq!(
        d.bok(&["run", "--rm", "--mount", "type=volume,src=data,dst=/d,readonly", "busybox", "cat", "/d/f"]),
        "kept\n"
    );
    assert!(d.bok(&["volume", "ls"]).contains("local     data"));
    assert_eq!(d.bok(&["volume", "inspect", "-f", "{{.Name}} {{.Driver}}", "data"]), "data local\n");
    assert_eq!(d.bok(&["volume", "rm", "data"]), "data\n");
}

#[test]
fn run_rm_reports_the_exit_code_of_a_container_that_exits_at_once() {
    // The monitor of a --rm container retires (no socket, no monitor pid)
    // as it reports the exit, and the daemon removes the record at once: a
    // waiter that finds the socket gone reads the state instead (the exit
    // must be recorded there first), and one that finds the record gone
    // must answer with the code the removal announces, not its own stale
    // one. Each race hit about one run in twenty to forty.
    let Some(d) = Daemon::start() else { return };
    for i in 0..30 {
        let code = 1 + i % 5;
        let o = d.b(&["run", "--rm", "busybox", "sh", "-c", &format!("exit {code}")]);
        assert_eq!(o.status.code(), Some(code), "run {i}: {}", text(&o.stderr));
    }
    assert_eq!(d.bok(&["ps", "-aq"]), "", "--rm left a container behind");
}

#[test]
fn berth_cli_init_reaps_and_forwards_signals() {
    let Some(d) = Daemon::start() else { return };
    // An orphan whose parent exits is re-parented to PID 1; `sleep` as PID 1
    // never reaps it, berth's init does.
    let script = "sh -c 'sleep 0.1 &'; exec sleep 300";
    for (name, init) in [("noinit", false), ("withinit", true)] {
        let mut args = vec!["run", "-d", "--name", name];
        if init {
            args.push("--init");
        }
        args.extend(["busybox", "sh", "-c", script]);
        d.bok(&args);
    }
    std::thread::sleep(Duration::from_millis(800));
    let zombies =
        |name: &str| d.bok(&["exec", name, "ps", "-o", "stat"]).lines().filter(|l| l.starts_with('Z')).count();
    assert_eq!(zombies("noinit"), 1, "without --init the orphan stays a zombie");
    assert_eq!(zombies("withinit"), 0, "--init reaps the orphan");
    assert_eq!(d.inspect("withinit", "{{.HostConfig.Init}}"), "true");
    // SIGTERM reaches the program through the init (sleep dies of it: 143),
    // well before the 10 s stop timeout.
    let t = Instant::now();
    d.bok(&["stop", "withinit"]);
    assert!(t.elapsed() < Duration::from_secs(8), "stop waited for the timeout: the signal was not forwarded");
    assert_eq!(d.inspect("withinit", "{{.State.ExitCode}}"), "143");
    // The init exits with the program's code.
    let o = d.b(&["run", "--rm", "--init", "busybox", "sh", "-c", "exit 9"]);
    assert_eq!(o.status.code(), Some(9));
}

#[test]
fn berth_cli_tty_and_detach_keys() {
    let Some(d) = Daemon::start() else { return };
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("SKIPPED: script(1) is missing (bsdutils)");
        return;
    }
    let host = format!("unix://{}", d.sock().display());
    let root = d.root().display().to_string();
    // A pty on our side through script(1): the container sees a tty, its
    // exit code comes back.
    // script(1) gives the command a pty; its stdin is ours to type into.
    let in_pty = |cmd: &str| {
        let mut c = Command::new("script");
        c.args(["-qfec", cmd, "/dev/null"]).env_remove("DOCKER_HOST");
        c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().expect("script");
        let stdin = child.stdin.take().expect("stdin");
        std::thread::sleep(Duration::from_millis(1500));
        (child, stdin)
    };
    let (child, mut stdin) = in_pty(&format!(
        "{} --root {root} -H {host} run -it --rm busybox sh -c 'tty; read x; echo got-$x; exit 5'",
        berth()
    ));
    use std::io::Write as _;
    stdin.write_all(b"abc\r").expect("write");
    let o = child.wait_with_output().expect("wait");
    let out = text(&o.stdout).replace('\r', "");
    assert!(out.contains("/dev/pts/0") && out.contains("got-abc"), "{out}");
    assert_eq!(o.status.code(), Some(5), "{out}");
    // ctrl-p ctrl-q detaches and leaves the container running.
    let (mut child, mut stdin) = in_pty(&format!("{} --root {root} -H {host} run -it --name det busybox sh", berth()));
    stdin.write_all(b"\x10\x11").expect("write");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "the detach keys did not end the session");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(stdin);
    assert_eq!(d.inspect("det", "{{.State.Status}}"), "running");
    d.bok(&["rm", "-f", "det"]);
}

#[test]
fn berth_cli_starts_a_daemon_on_demand() {
    let Some(d) = Daemon::image_only() else { return };
    let run_root = d.tmp.path().join("run");
    let cli = |args: &[&str], autostart: bool| {
        let mut c = Command::new(berth());
        c.env_remove("DOCKER_HOST")
            .env("BERTH_ROOT", d.root())
            .env("BERTH_RUN_ROOT", &run_root)
            .args(args)
            .stdin(Stdio::null());
        if !autostart {
            c.env("BERTH_NO_AUTOSTART", "1");
        }
        run_timeout(c, Duration::from_secs(60))
    };
    assert!(d.serves().is_empty());
    // Refused when told not to start one.
    let o = cli(&["ps"], false);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("Cannot connect to the berth daemon"), "{}", text(&o.stderr));
    let o = cli(&["run", "--rm", "busybox", "true"], false);
    assert_eq!(o.status.code(), Some(125), "run fails like docker's when the daemon cannot be reached");
    // The first `berth run` starts it, and says so on stderr only.
    let o = cli(&["run", "--rm", "busybox", "echo", "hi"], true);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "hi\n");
    assert!(text(&o.stderr).contains("started the daemon"), "{}", text(&o.stderr));
    assert_eq!(d.serves().len(), 1);
    // Later verbs use it; no second daemon.
    let o = cli(&["run", "-d", "--name", "bg", "busybox", "sleep", "300"], true);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&cli(&["ps"], true).stdout).contains(" bg\n"));
    assert_eq!(d.serves().len(), 1);
    // Image verbs go through the daemon that holds the store.
    let o = cli(&["images"], true);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("busybox "), "{}", text(&o.stdout));
    assert!(cli(&["tag", "busybox", "again:1"], true).status.success());
    assert_eq!(text(&cli(&["rmi", "again:1"], true).stdout), "Untagged: again:1\n");
    let o = cli(&["rmi", "busybox"], true);
    assert!(text(&o.stderr).contains("image is being used by"), "{}", text(&o.stderr));
    assert!(cli(&["rm", "-f", "bg"], true).status.success());
}

#[test]
fn system_df_and_image_prune_through_the_daemon() {
    let Some(d) = Daemon::start() else { return };
    d.bok(&["volume", "create", "vol1"]);
    d.bok(&[
        "run",
        "-d",
        "--name",
        "user",
        "-v",
        "vol1:/v",
        "busybox",
        "sh",
        "-c",
        "echo 12345 > /v/f; echo x > /upper; exec sleep 300",
    ]);
    d.bok(&["tag", "busybox", "second:1"]);
    d.bok(&["create", "--name", "idle", "busybox", "true"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.bok(&["system", "df"]).lines().any(|l| l.starts_with("Local Volumes") && l.contains("6B")) {
        assert!(Instant::now() < deadline, "volume usage never showed: {}", d.bok(&["system", "df"]));
        std::thread::sleep(Duration::from_millis(100));
    }
    // ps filters, in the daemon.
    assert_eq!(d.bok(&["ps", "-a", "--filter", "volume=vol1", "--format", "{{.Names}}"]), "user\n");
    assert_eq!(d.bok(&["ps", "-a", "--filter", "since=user", "--format", "{{.Names}}"]), "idle\n");
    assert_eq!(d.bok(&["ps", "-a", "--filter", "before=idle", "--format", "{{.Names}}"]), "user\n");
    assert_eq!(
        d.bok(&["ps", "-a", "--filter", "health=none", "--filter", "status=created", "--format", "{{.Names}}"]),
        "idle\n"
    );
    let o = d.b(&["ps", "--filter", "bogus=1"]);
    assert!(text(&o.stderr).contains("invalid filter 'bogus'"), "{}", text(&o.stderr));
    let df = d.bok(&["system", "df"]);
    let cols = |prefix: &str| -> Vec<String> {
        let line = df.lines().find(|l| l.starts_with(prefix)).unwrap_or_default();
        line[prefix.len()..].split_whitespace().map(String::from).collect()
    };
    assert_eq!(cols("Images")[..2], ["1", "1"], "{df}");
    assert_eq!(cols("Containers")[..2], ["2", "1"], "{df}");
    assert_eq!(cols("Local Volumes")[..2], ["1", "1"], "{df}");
    // The docker CLI reads the same /system/df.
    let docker_df = d.ok(&["system", "df"]);
    assert!(
        docker_df.lines().any(|l| l.starts_with("Containers") && l.split_whitespace().nth(1) == Some("2")),
        "{docker_df}"
    );
    let v = d.bok(&["system", "df", "-v"]);
    assert!(v.contains("vol1") && v.contains("second") && v.contains(" user\n"), "{v}");
    // prune -a keeps images in use; once nothing uses them, both names go.
    let o = d.b(&["image", "prune", "-a", "-f"]);
    assert!(o.status.success() && !text(&o.stdout).contains("deleted:"), "{}", text(&o.stdout));
    d.bok(&["rm", "-f", "user", "idle"]);
    let pruned = d.ok(&["image", "prune", "-a", "-f"]);
    assert!(pruned.contains("untagged: busybox:latest") && pruned.contains("untagged: second:1"), "{pruned}");
    assert!(pruned.contains("deleted: sha256:"), "{pruned}");
    assert_eq!(d.bok(&["images", "-q"]), "");
}

#[test]
fn image_verbs_through_the_daemon() {
    let Some(d) = Daemon::start() else { return };
    let Some(reg) = common::TestRegistry::start_with_auth("bob", "s3cret") else { return };
    let tmp = d.tmp.path();
    // import streams the tarball to the daemon; --change applies.
    let id = d.bok(&[
        "import",
        "-c",
        "CMD [\"echo\", \"imported\"]",
        busybox_tarball().to_str().unwrap_or_default(),
        "imp:1",
    ]);
    assert!(id.trim().starts_with("sha256:"), "{id}");
    assert_eq!(d.bok(&["run", "--rm", "imp:1"]), "imported\n");
    let hist = d.bok(&["history", "imp:1"]);
    assert!(hist.starts_with("IMAGE") && hist.contains(&id.trim()[7..19]), "{hist}");
    // save → rmi → load, through the API's archive endpoints.
    let archive = tmp.join("imp.tar");
    d.bok(&["save", "-o", archive.to_str().unwrap_or_default(), "imp:1"]);
    assert_eq!(d.bok(&["rmi", "imp:1"]), format!("Untagged: imp:1\nDeleted: {}", id));
    assert_eq!(d.bok(&["load", "-i", archive.to_str().unwrap_or_default()]), "Loaded image: imp:1\n");
    assert_eq!(d.bok(&["images", "-q", "imp"]).trim(), &id.trim()[7..19]);
    // Filters go to the daemon: berth's CLI and the docker CLI agree.
    assert_eq!(d.bok(&["images", "-q", "--filter", "reference=im*"]).trim(), &id.trim()[7..19]);
    assert_eq!(d.bok(&["images", "-q", "--filter", "reference=nothing*"]), "");
    assert_eq!(d.ok(&["images", "-q", "--filter", "reference=im*"]).trim(), &id.trim()[7..19]);
    assert_eq!(d.ok(&["images", "-q", "--filter", "dangling=true"]), "");
    let o = d.b(&["images", "--filter", "bogus=1"]);
    assert!(text(&o.stderr).contains("invalid filter 'bogus'"), "{}", text(&o.stderr));
    // Push with this user's saved login (sent as X-Registry-Auth).
    let cfg = common::write_docker_config(tmp, &reg.host, "bob", "s3cret");
    let name = reg.image("team/imp:v1");
    d.bok(&["tag", "imp:1", &name]);
    let mut c = d.berth(&["push", &name]);
    c.env("DOCKER_CONFIG", cfg.parent().unwrap_or(tmp));
    let o = run_timeout(c, Duration::from_secs(60));
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}{}", text(&o.stderr));
    assert!(out.contains(&format!("The push refers to repository [{}/team/imp]", reg.host)), "{out}");
    assert!(out.lines().any(|l| l.starts_with("v1: digest: sha256:")), "{out}");
    // Without credentials the registry refuses, and the error says so.
    let o = d.b(&["push", &name]);
    assert_eq!(o.status.code(), Some(1));
    // The docker CLI logs in through the daemon (/auth) and pulls with it.
    let dcfg = tmp.join("dcfg");
    let mut c =
        d.docker(&["--config", dcfg.to_str().unwrap_or_default(), "login", "-u", "bob", "--password-stdin", &reg.host]);
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("docker login");
    use std::io::Write as _;
    child.stdin.take().expect("stdin").write_all(b"s3cret\n").expect("password");
    let o = child.wait_with_output().expect("wait");
    assert!(
        o.status.success() && text(&o.stdout).contains("Login Succeeded"),
        "{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    d.bok(&["rmi", &name]);
    d.ok(&["--config", dcfg.to_str().unwrap_or_default(), "pull", "-q", &name]);
    assert_eq!(d.bok(&["run", "--rm", &name]), "imported\n");
}

/// A hijacked API connection made by hand (no client-side detach logic):
/// returns the stream positioned after the `101` response headers.
fn raw_hijack(sock: &Path, path: &str, body: &str) -> std::os::unix::net::UnixStream {
    use std::io::{Read as _, Write as _};
    let mut s = std::os::unix::net::UnixStream::connect(sock).expect("connect");
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: berth\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("request");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).expect("read headers"), 1, "connection closed in the headers");
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", text(&head));
    s
}

/// Reads until EOF or `limit`; true when the server closed the stream.
fn closes_within(s: &mut std::os::unix::net::UnixStream, limit: Duration) -> bool {
    use std::io::Read as _;
    s.set_read_timeout(Some(limit)).expect("timeout");
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

#[test]
fn daemon_side_detach_keys_for_attach_and_exec() {
    use std::io::Write as _;
    let Some(d) = Daemon::start() else { return };
    d.bok(&["run", "-d", "-it", "--name", "tt", "busybox", "sh"]);
    d.wait_for("tt", "{{.State.Status}}", "running");
    // Attach, type the default keys: the daemon ends the session, the
    // container keeps running.
    let mut s = raw_hijack(&d.sock(), "/v1.47/containers/tt/attach?stream=1&stdin=1&stdout=1&stderr=1", "");
    s.write_all(b"echo hi\n\x10\x11").expect("write");
    assert!(closes_within(&mut s, Duration::from_secs(10)), "the daemon did not end the attach on ctrl-p ctrl-q");
    assert_eq!(d.inspect("tt", "{{.State.Status}}"), "running");
    // Custom keys for attach.
    let mut s = raw_hijack(&d.sock(), "/v1.47/containers/tt/attach?stream=1&stdin=1&stdout=1&detachKeys=ctrl-x,x", "");
    s.write_all(b"\x18x").expect("write");
    assert!(closes_within(&mut s, Duration::from_secs(10)), "custom detach keys ignored");
    // exec -it: detaching leaves the process running.
    let body = r#"{"AttachStdin":true,"AttachStdout":true,"Tty":true,"Cmd":["sh","-c","sleep 30"]}"#;
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "--unix-socket",
            d.sock().to_str().unwrap_or_default(),
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
        ])
        .arg("http://x/v1.47/containers/tt/exec")
        .output()
        .expect("curl");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("exec create json");
    let eid = v["Id"].as_str().expect("exec id").to_string();
    let mut s = raw_hijack(&d.sock(), &format!("/v1.47/exec/{eid}/start"), r#"{"Detach":false,"Tty":true}"#);
    std::thread::sleep(Duration::from_millis(300));
    s.write_all(b"\x10\x11").expect("write");
    assert!(closes_within(&mut s, Duration::from_secs(10)), "the daemon did not end the exec session");
    assert!(d.bok(&["top", "tt"]).contains("sleep 30"), "the exec'd process must survive the detach");
    d.bok(&["rm", "-f", "tt"]);
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made
/// with openssl into `dir`; `None` (skip) when openssl is missing.
fn make_certs(dir: &Path) -> Option<()> {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("SKIPPED: openssl is missing");
        return None;
    }
    let sh = |script: &str| {
        let o = Command::new("bash").arg("-ec").arg(script).current_dir(dir).output().expect("bash");
        assert!(o.status.success(), "{script}: {}", text(&o.stderr));
    };
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    sh(&format!(
        "openssl req -x509 {ec} -keyout ca-key.pem -out ca.pem -days 2 -subj /CN=berth-test-ca \
         -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign"
    ));
    for (name, cn, ext) in [
        ("server", "127.0.0.1", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
        ("client", "client", "extendedKeyUsage=clientAuth"),
        ("rogue", "client", "extendedKeyUsage=clientAuth"),
    ] {
        let ca = if name == "rogue" { "rogue-ca" } else { "ca" };
        if name == "rogue" {
            sh(&format!("openssl req -x509 {ec} -keyout rogue-ca-key.pem -out rogue-ca.pem -days 2 -subj /CN=rogue -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign"));
        }
        std::fs::write(dir.join(format!("{name}.ext")), ext).expect("ext");
        sh(&format!(
            "openssl req {ec} -keyout {name}-key.pem -out {name}.csr -subj /CN={cn} && \
             openssl x509 -req -in {name}.csr -CA {ca}.pem -CAkey {ca}-key.pem -CAcreateserial -out {name}-cert.pem -days 2 -extfile {name}.ext"
        ));
    }
    Some(())
}

#[test]
fn tcp_only_with_mutual_tls() {
    let Some(mut d) = Daemon::image_only() else { return };
    let certs = d.tmp.path().join("certs");
    std::fs::create_dir_all(&certs).expect("certs dir");
    if make_certs(&certs).is_none() {
        return;
    }
    let c = |f: &str| certs.join(f).display().to_string();
    // Plain TCP is refused outright.
    let o = Command::new(berth())
        .args(["serve", "--root"])
        .arg(d.root())
        .arg("--run-root")
        .arg(d.tmp.path().join("run"))
        .args(["-H", "tcp://127.0.0.1:0"])
        .output()
        .expect("serve");
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("without mutual TLS"), "{}", text(&o.stderr));
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let tcp = format!("tcp://127.0.0.1:{port}");
    let log = std::fs::File::create(d.tmp.path().join("serve.log")).expect("log");
    let child = Command::new(berth())
        .args(["serve", "--root"])
        .arg(d.root())
        .arg("--run-root")
        .arg(d.tmp.path().join("run"))
        .arg("-H")
        .arg(format!("unix://{}", d.sock().display()))
        .args([
            "-H",
            &tcp,
            "--tlsverify",
            "--tlscacert",
            &c("ca.pem"),
            "--tlscert",
            &c("server-cert.pem"),
            "--tlskey",
            &c("server-key.pem"),
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn serve");
    d.child = Some(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the daemon did not listen on {tcp}: {}", d.serve_log());
        std::thread::sleep(Duration::from_millis(20));
    }
    // berth's CLI over TLS: a run with its attach stream, exit code back.
    let tls_cli = |cert: &str, args: &[&str]| {
        let mut cmd = Command::new(berth());
        cmd.env_remove("DOCKER_HOST")
            .args([
                "-H",
                &tcp,
                "--tlsverify",
                "--tlscacert",
                &c("ca.pem"),
                "--tlscert",
                &c(&format!("{cert}-cert.pem")),
                "--tlskey",
                &c(&format!("{cert}-key.pem")),
            ])
            .args(args)
            .stdin(Stdio::null());
        run_timeout(cmd, Duration::from_secs(60))
    };
    let o = tls_cli("client", &["run", "--rm", "busybox", "sh", "-c", "echo over-tls; exit 4"]);
    assert_eq!((o.status.code(), text(&o.stdout)), (Some(4), "over-tls\n".into()), "{}", text(&o.stderr));
    // The docker CLI too.
    let o = Command::new("docker")
        .env_remove("DOCKER_HOST")
        .env("DOCKER_CONFIG", d.tmp.path().join("docker-config"))
        .args([
            "--tlsverify",
            "--tlscacert",
            &c("ca.pem"),
            "--tlscert",
            &c("client-cert.pem"),
            "--tlskey",
            &c("client-key.pem"),
            "-H",
            &tcp,
        ])
        .args(["run", "--rm", "busybox", "echo", "docker-over-tls"])
        .output()
        .expect("docker");
    assert_eq!(text(&o.stdout), "docker-over-tls\n", "{}", text(&o.stderr));
    // A certificate from another CA, or none at all, gets nothing.
    let o = tls_cli("rogue", &["ps"]);
    assert_eq!(o.status.code(), Some(1), "a foreign client certificate was accepted");
    let o = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", &c("ca.pem")])
        .arg(format!("https://127.0.0.1:{port}/_ping"))
        .output()
        .expect("curl");
    assert_eq!(text(&o.stdout), "000", "a client without a certificate got an answer");
    // Plain TCP from the client side is refused before connecting.
    let mut cmd = Command::new(berth());
    cmd.env_remove("DOCKER_HOST").args(["-H", &tcp, "ps"]);
    let o = run_timeout(cmd, Duration::from_secs(20));
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("--tlsverify"), "{}", text(&o.stderr));
}

#[test]
fn cp_stats_commit_info_version() {
    let Some(d) = Daemon::start() else { return };
    d.bok(&[
        "run",
        "-d",
        "--name",
        "box",
        "busybox",
        "sh",
        "-c",
        "mkdir -p /d/sub; echo a > /d/f; echo b > /d/sub/g; ln -s /etc/passwd /d/link; exec sleep 300",
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.b(&["exec", "box", "test", "-L", "/d/link"]).status.code() != Some(0) {
        assert!(Instant::now() < deadline, "the container never made its files");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = d.tmp.path().join("out");
    std::fs::create_dir(&out).expect("out");
    // Out: a directory into an existing one, a file under a new name; the
    // objects themselves, never links to where they live on the host.
    d.bok(&["cp", "box:/d", out.to_str().unwrap_or_default()]);
    assert_eq!(std::fs::read_to_string(out.join("d/sub/g")).expect("g"), "b\n");
    assert!(std::fs::symlink_metadata(out.join("d")).expect("d").is_dir());
    assert_eq!(std::fs::read_link(out.join("d/link")).expect("link"), Path::new("/etc/passwd"));
    let renamed = out.join("renamed");
    d.bok(&["cp", "box:/d/f", renamed.to_str().unwrap_or_default()]);
    assert!(std::fs::symlink_metadata(&renamed).expect("renamed").is_file());
    assert_eq!(std::fs::read_to_string(&renamed).expect("renamed"), "a\n");
    let docker_copy = out.join("by-docker");
    d.ok(&["cp", "box:/d/f", docker_copy.to_str().unwrap_or_default()]);
    assert!(
        std::fs::symlink_metadata(&docker_copy).expect("docker copy").is_file(),
        "docker cp got a link, not the file"
    );
    // A symlink as the source is copied as itself; -L copies what it leads to.
    let as_link = out.join("as-link");
    d.bok(&["cp", "box:/d/link", as_link.to_str().unwrap_or_default()]);
    assert_eq!(std::fs::read_link(&as_link).expect("a symlink"), Path::new("/etc/passwd"));
    d.bok(&["cp", "-L", "box:/d/link", out.to_str().unwrap_or_default()]);
    let followed = std::fs::read_to_string(out.join("link")).expect("-L copied a file named as the link");
    assert!(followed.starts_with("root:"), "{followed}");
    // The archive the API serves names no host path.
    let o = Command::new("curl")
        .args([
            "-s",
            "--unix-socket",
            d.sock().to_str().unwrap_or_default(),
            "http://x/containers/box/archive?path=/d/f",
        ])
        .output()
        .expect("curl");
    assert!(!text(&o.stdout).contains(d.tmp.path().to_str().unwrap_or("/tmp")), "the archive leaks a host path");
    // In: a file into a directory, and under a new name.
    let local = d.tmp.path().join("local.txt");
    std::fs::write(&local, "from-host\n").expect("local");
    d.bok(&["cp", local.to_str().unwrap_or_default(), "box:/d/sub/"]);
    d.bok(&["cp", local.to_str().unwrap_or_default(), "box:/d/newname"]);
    assert_eq!(d.bok(&["exec", "box", "cat", "/d/sub/local.txt", "/d/newname"]), "from-host\nfrom-host\n");
    // stats --no-stream: docker's columns, the container's pids.
    let st = d.bok(&["stats", "--no-stream", "box"]);
    assert!(st.starts_with("CONTAINER ID") && st.contains("MEM USAGE / LIMIT") && st.contains(" box "), "{st}");
    // commit → an image that runs with the change.
    let id = d.bok(&["commit", "-c", "CMD [\"cat\", \"/d/newname\"]", "box", "snap:1"]);
    assert!(id.starts_with("sha256:"), "{id}");
    assert_eq!(d.bok(&["run", "--rm", "snap:1"]), "from-host\n");
    assert!(d.bok(&["info"]).contains(&format!("Docker Root Dir: {}", d.root().display())));
    assert_eq!(d.bok(&["version", "--format", "{{.Server.ApiVersion}}"]), "1.47\n");
    d.bok(&["rm", "-f", "box"]);
}

#[test]
fn image_and_volume_events() {
    let Some(d) = Daemon::start() else { return };
    let t0 = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs().to_string();
    d.bok(&["tag", "busybox", "ev:1"]);
    d.bok(&["rmi", "ev:1"]);
    d.bok(&["volume", "create", "evvol"]);
    d.bok(&["volume", "rm", "evvol"]);
    let until =
        (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() + 1).to_string();
    let fmt = "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}{{.Actor.ID}}";
    let images = d.bok(&["events", "--since", &t0, "--until", &until, "--filter", "type=image", "--format", fmt]);
    let lines: Vec<&str> = images.lines().collect();
    assert_eq!(lines.len(), 2, "{images}");
    assert!(
        lines[0].starts_with("image tag ev:1sha256:") && lines[1].starts_with("image untag ev:1sha256:"),
        "{images}"
    );
    let vols = d.ok(&[
        "events",
        "--since",
        &t0,
        "--until",
        &until,
        "--filter",
        "type=volume",
        "--format",
        "{{.Action}} {{.Actor.ID}}",
    ]);
    assert_eq!(vols, "create evvol\ndestroy evvol\n");
    let o = d.b(&["events", "--since", &t0, "--until", &until, "--filter", "bogus=1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("invalid filter 'bogus'"), "{}", text(&o.stderr));
}

#[test]
fn signals_reach_the_container_through_the_cli() {
    let Some(d) = Daemon::start() else { return };
    let mut c = d.berth(&[
        "run",
        "--rm",
        "--name",
        "sig",
        "busybox",
        "sh",
        "-c",
        "trap 'echo got-term; exit 7' TERM; echo ready; sleep 100 & wait",
    ]);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("berth run");
    let mut out = child.stdout.take().expect("stdout");
    // Wait for the trap to be set.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !String::from_utf8_lossy(&seen).contains("ready") {
        assert!(Instant::now() < deadline, "the container never got ready");
        let mut b = [0u8; 64];
        use std::io::Read as _;
        let n = out.read(&mut b).expect("read");
        assert!(n > 0, "output ended early");
        seen.extend_from_slice(&b[..n]);
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM)
        .expect("kill");
    let mut rest = String::new();
    use std::io::Read as _;
    out.read_to_string(&mut rest).expect("rest");
    let status = child.wait().expect("wait");
    assert_eq!(rest, "got-term\n");
    assert_eq!(status.code(), Some(7), "the CLI exits with the container's code");
}

#[test]
fn custom_seccomp_profile_from_a_file_is_sent_as_json() {
    let Some(d) = Daemon::start() else { return };
    let profile = d.tmp.path().join("no-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
    )
    .expect("profile");
    let opt = format!("seccomp={}", profile.display());
    // Both clients read the file and send its JSON; the profile applies.
    for o in [
        d.b(&["run", "--rm", "--security-opt", &opt, "busybox", "mkdir", "/x"]),
        d.run(&["run", "--rm", "--security-opt", &opt, "busybox", "mkdir", "/x"]),
    ] {
        assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
        assert!(text(&o.stderr).contains("Operation not permitted"), "{}", text(&o.stderr));
    }
    assert_eq!(d.bok(&["run", "--rm", "--security-opt", &opt, "busybox", "sh", "-c", "echo allowed"]), "allowed\n");
    // A path sent to the API is refused: the daemon reads no file for a client.
    let body = format!(
        r#"{{"Image":"busybox","Cmd":["true"],"HostConfig":{{"SecurityOpt":["seccomp={}"]}}}}"#,
        profile.display()
    );
    let curl = |args: &[&str]| {
        let o = Command::new("curl")
            .args(["-s", "--unix-socket", d.sock().to_str().unwrap_or_default()])
            .args(args)
            .output()
            .expect("curl");
        text(&o.stdout)
    };
    let created =
        curl(&["-H", "Content-Type: application/json", "-d", &body, "http://x/v1.47/containers/create?name=bypath"]);
    assert!(created.contains("\"Id\""), "{created}");
    let started = curl(&["-X", "POST", "-w", " %{http_code}", "http://x/v1.47/containers/bypath/start"]);
    assert!(started.ends_with(" 400") && started.contains("profile's JSON"), "{started}");
    d.bok(&["rm", "-f", "bypath"]);
}
