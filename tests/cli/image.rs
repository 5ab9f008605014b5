//! `kubelab image pull|list|rm` against a real HTTP server on 127.0.0.1: clean pulls,
//! resumed and restarted downloads, retries, timeouts, digests, the cache, proxies.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kubelab::reason;
use sha2::Digest as _;

use crate::util::{After, HttpServer, Kubelab, Reply, Request, files_in, test_data};

const MIB: usize = 1 << 20;

fn sha256(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

/// `kubelab image pull URL --sha256 DIGEST` with quick retries, so fault tests stay fast.
fn pull(k: &Kubelab, url: &str, digest: &str, env: &[(&str, &str)]) -> crate::util::Run {
    let mut cmd = k.cmd(["image", "pull", url, "--sha256", digest]);
    cmd.env("KUBELAB_RETRY_BACKOFF_MS", "20");
    cmd.envs(env.iter().copied());
    crate::util::Run::from(cmd.output().expect("run kubelab"))
}

fn cache_dir(k: &Kubelab) -> std::path::PathBuf {
    k.home().join("cache/images")
}

/// The one cached image file (not its sidecar) and its bytes.
fn cached_image(k: &Kubelab) -> Vec<u8> {
    let images: Vec<_> = files_in(&cache_dir(k))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e != "json"))
        .collect();
    assert_eq!(images.len(), 1, "{images:?}");
    std::fs::read(&images[0]).expect("read cached image")
}

fn file_server(data: Vec<u8>) -> HttpServer {
    HttpServer::start(move |req, _| Reply::file(&data, req, true))
}

#[test]
fn clean_pull_verifies_and_stores_by_digest() {
    let data = test_data(3 * MIB + 123, 1);
    let digest = sha256(&data);
    let server = file_server(data.clone());
    let k = Kubelab::new();
    let run = pull(&k, &server.url("disk.qcow2"), &digest, &[]).success();
    let path = cache_dir(&k).join(format!("{digest}.qcow2"));
    assert!(run.stdout.contains(&path.display().to_string()), "{run}");
    assert_eq!(std::fs::read(&path).unwrap(), data);
    let names: Vec<String> = files_in(&cache_dir(&k))
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [format!("{digest}.qcow2"), format!("{digest}.qcow2.json")]);
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn cache_hit_sends_no_request() {
    let data = test_data(MIB, 2);
    let digest = sha256(&data);
    let server = file_server(data);
    let k = Kubelab::new();
    pull(&k, &server.url("disk.qcow2"), &digest, &[]).success();
    let run = pull(&k, &server.url("disk.qcow2"), &digest, &[]).success();
    assert!(run.stderr.contains("image is cached"), "{run}");
    assert_eq!(server.requests().len(), 1);
}

/// A server that honours Range and cuts the first response after `cut` bytes.
fn cut_once_at(data: &[u8], cut: usize) -> HttpServer {
    let data = data.to_vec();
    HttpServer::start(move |req, i| {
        let reply = Reply::file(&data, req, true);
        if i == 0 { reply.stop_after(cut, After::Cut) } else { reply }
    })
}

#[test]
fn cut_connection_is_resumed_with_range() {
    let data = test_data(4 * MIB, 3);
    let digest = sha256(&data);
    let cut = data.len() * 4 / 10;
    let server = cut_once_at(&data, cut);
    let k = Kubelab::new();
    pull(&k, &server.url("disk.qcow2"), &digest, &[]).success();
    assert_eq!(cached_image(&k), data);
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    let start = requests[1].range_start.expect("second request has a Range");
    assert!(start > 0, "resumed from {start}");
    let bytes = server.body_bytes();
    assert!(bytes[1] < data.len() as u64, "second request fetched {} bytes", bytes[1]);
    assert_eq!(bytes[1], data.len() as u64 - start);
}

#[test]
fn partial_file_of_a_failed_run_is_resumed_by_the_next_run() {
    let data = test_data(2 * MIB, 4);
    let digest = sha256(&data);
    let cut = data.len() * 4 / 10;
    let server = cut_once_at(&data, cut);
    let k = Kubelab::new();
    let url = server.url("disk.qcow2");
    pull(&k, &url, &digest, &[("KUBELAB_DOWNLOAD_RETRIES", "0")])
        .failure(reason::IMG_DOWNLOAD_FAILED.exit_code);
    let part = cache_dir(&k).join(format!("{digest}.part"));
    assert_eq!(std::fs::metadata(&part).expect("partial file kept").len(), cut as u64);
    pull(&k, &url, &digest, &[]).success();
    assert_eq!(server.requests()[1].range_start, Some(cut as u64));
    assert_eq!(server.body_bytes()[1], (data.len() - cut) as u64);
    assert_eq!(cached_image(&k), data);
    assert!(!part.exists());
}

#[test]
fn server_ignoring_range_restarts_from_the_beginning() {
    let data = test_data(2 * MIB, 5);
    let digest = sha256(&data);
    let server = {
        let data = data.clone();
        HttpServer::start(move |req, i| {
            let reply = Reply::file(&data, req, false);
            if i == 0 { reply.stop_after(data.len() / 2, After::Cut) } else { reply }
        })
    };
    let k = Kubelab::new();
    pull(&k, &server.url("disk.qcow2"), &digest, &[]).success();
    assert_eq!(cached_image(&k), data);
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests[1].range_start.is_some(), "kubelab asked for a range");
    assert_eq!(server.body_bytes()[1], data.len() as u64, "server sent it all again");
}

#[test]
fn server_error_then_success_is_retried() {
    let data = test_data(MIB, 6);
    let digest = sha256(&data);
    let server = {
        let data = data.clone();
        HttpServer::start(move |req, i| {
            if i == 0 { Reply::new(500, "boom") } else { Reply::file(&data, req, true) }
        })
    };
    let k = Kubelab::new();
    let run = pull(&k, &server.url("disk.qcow2"), &digest, &[]).success();
    assert!(run.stderr.contains("HTTP status 500"), "{run}");
    assert_eq!(server.requests().len(), 2);
    assert_eq!(cached_image(&k), data);
}

#[test]
fn not_found_is_not_retried() {
    let server = HttpServer::start(|_, _| Reply::new(404, "no"));
    let k = Kubelab::new();
    let run = pull(&k, &server.url("missing.qcow2"), &"a".repeat(64), &[])
        .failure(reason::IMG_DOWNLOAD_FAILED.exit_code);
    assert!(run.stderr.contains("HTTP status 404"), "{run}");
    assert!(run.stderr.contains("hint (IMG_DOWNLOAD_FAILED)"), "{run}");
    assert_eq!(server.requests().len(), 1);
    assert_eq!(files_in(&cache_dir(&k)), Vec::<std::path::PathBuf>::new());
}

#[test]
fn wrong_digest_leaves_nothing_and_shows_both_digests() {
    let data = test_data(MIB, 7);
    let actual = sha256(&data);
    let wrong = sha256(b"something else");
    let server = file_server(data);
    let k = Kubelab::new();
    let run = pull(&k, &server.url("disk.qcow2"), &wrong, &[])
        .failure(reason::IMG_CHECKSUM_MISMATCH.exit_code);
    assert!(run.stderr.contains(&wrong) && run.stderr.contains(&actual), "{run}");
    assert!(run.stderr.contains("hint (IMG_CHECKSUM_MISMATCH)"), "{run}");
    assert_eq!(files_in(&cache_dir(&k)), Vec::<std::path::PathBuf>::new());
}

#[test]
fn stalled_server_hits_the_read_idle_timeout() {
    let data = test_data(MIB, 8);
    let digest = sha256(&data);
    let server = HttpServer::start(move |req, _| {
        Reply::file(&data, req, true).stop_after(100 * 1024, After::Stall)
    });
    let k = Kubelab::new();
    let started = Instant::now();
    let env = [("KUBELAB_READ_TIMEOUT_SECS", "1"), ("KUBELAB_DOWNLOAD_RETRIES", "0")];
    let run = pull(&k, &server.url("disk.qcow2"), &digest, &env)
        .failure(reason::IMG_DOWNLOAD_FAILED.exit_code);
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    assert!(run.stderr.contains("interrupted"), "{run}");
}

#[test]
fn slow_server_outlasting_the_idle_timeout_still_completes() {
    let data = test_data(640 * 1024, 9);
    let digest = sha256(&data);
    let server = {
        let data = data.clone();
        HttpServer::start(move |req, _| {
            Reply::file(&data, req, true).slow(Duration::from_millis(50))
        })
    };
    let k = Kubelab::new();
    let started = Instant::now();
    pull(&k, &server.url("disk.qcow2"), &digest, &[("KUBELAB_READ_TIMEOUT_SECS", "1")]).success();
    assert!(started.elapsed() > Duration::from_secs(1), "the whole body took longer than 1 s");
    assert_eq!(server.requests().len(), 1);
    assert_eq!(cached_image(&k), data);
}

#[test]
fn concurrent_pulls_download_once() {
    let data = Arc::new(test_data(2 * MIB, 10));
    let digest = sha256(&data);
    let server = {
        let data = data.clone();
        HttpServer::start(move |req, _| {
            Reply::file(&data, req, true).slow(Duration::from_millis(5))
        })
    };
    let k = Kubelab::new();
    let url = server.url("disk.qcow2");
    let children: Vec<_> = (0..2)
        .map(|_| {
            let mut cmd = k.cmd(["image", "pull", &url, "--sha256", &digest]);
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn kubelab")
        })
        .collect();
    let runs: Vec<crate::util::Run> =
        children.into_iter().map(|c| c.wait_with_output().expect("wait").into()).collect();
    for run in &runs {
        assert_eq!(run.code, Some(0), "{run}");
    }
    assert_eq!(runs[0].stdout, runs[1].stdout);
    let downloaded =
        runs.iter().filter(|r| r.stderr.lines().any(|l| l.starts_with("downloading "))).count();
    assert_eq!(downloaded, 1, "{}\n{}", runs[0], runs[1]);
    assert_eq!(server.requests().len(), 1);
    assert_eq!(server.total_body_bytes(), data.len() as u64);
}

#[test]
fn corrupted_cached_file_is_detected_and_downloaded_again() {
    let data = test_data(MIB, 11);
    let digest = sha256(&data);
    let server = file_server(data.clone());
    let k = Kubelab::new();
    pull(&k, &server.url("disk.qcow2"), &digest, &[]).success();
    let path = cache_dir(&k).join(format!("{digest}.qcow2"));
    let mut corrupt = data.clone();
    corrupt[1000] ^= 0xff;
    std::fs::write(&path, &corrupt).unwrap();
    pull(&k, &server.url("disk.qcow2"), &digest, &[]).success();
    assert_eq!(server.requests().len(), 2);
    assert_eq!(std::fs::read(&path).unwrap(), data);
}

#[test]
fn url_without_digest_needs_insecure_skip_verify() {
    let data = test_data(100_000, 12);
    let server = file_server(data.clone());
    let k = Kubelab::new();
    let url = server.url("disk.vmdk");
    let run = k.run(["image", "pull", &url]).failure(reason::IMG_DIGEST_REQUIRED.exit_code);
    assert!(run.stderr.contains("--sha256"), "{run}");
    assert_eq!(server.requests().len(), 0);
    let run = k.run(["image", "pull", &url, "--insecure-skip-verify"]).success();
    let path = cache_dir(&k).join(format!("{}.vmdk", sha256(&data)));
    assert!(run.stdout.contains(&path.display().to_string()), "{run}");
}

#[test]
fn bad_inputs_are_refused_before_any_request() {
    let k = Kubelab::new();
    let bad_source = reason::IMG_BAD_SOURCE.exit_code;
    let run = k.run(["image", "pull", "http://[::1", "--sha256", &"a".repeat(64)]);
    assert!(run.stderr.contains("invalid image URL"), "{}", run.failure(bad_source));
    let run = k.run(["image", "pull", "ftp://127.0.0.1/x.img"]).failure(bad_source);
    assert!(run.stderr.contains("only http, https and file"), "{run}");
    let run = k.run(["image", "pull", "http://127.0.0.1:9/x.img", "--sha256", "abc"]);
    assert!(run.stderr.contains("64 hex characters"), "{}", run.failure(bad_source));
    let run = k.run(["image", "pull", "no-such-image"]).failure(reason::IMG_NOT_FOUND.exit_code);
    assert!(run.stderr.contains("known images: debian-12, ubuntu-24.04"), "{run}");
    assert!(run.stderr.contains("kubelab image list"), "{run}");
    let run = k.run(["image", "pull", "./missing.qcow2"]).failure(bad_source);
    assert!(run.stderr.contains("missing.qcow2"), "{run}");
}

#[test]
fn local_paths_and_file_urls_are_copied_into_the_cache() {
    let data = test_data(300_000, 13);
    let digest = sha256(&data);
    let k = Kubelab::new();
    let src = k.home().join("local.raw");
    std::fs::write(&src, &data).unwrap();
    let run = k.run(["image", "pull", src.to_str().unwrap()]).success();
    let path = cache_dir(&k).join(format!("{digest}.raw"));
    assert!(run.stdout.contains(&path.display().to_string()), "{run}");
    let url = url::Url::from_file_path(&src).unwrap();
    let wrong = sha256(b"x");
    k.run(["image", "pull", url.as_str(), "--sha256", &wrong])
        .failure(reason::IMG_CHECKSUM_MISMATCH.exit_code);
    k.run(["image", "pull", url.as_str(), "--sha256", &digest]).success();
    assert_eq!(std::fs::read(&path).unwrap(), data);
}

#[test]
fn list_and_rm_show_and_remove_cached_images() {
    let data = test_data(200_000, 14);
    let digest = sha256(&data);
    let server = file_server(data);
    let k = Kubelab::new();
    let run = k.run(["image", "list"]).success();
    assert!(run.stdout.contains("ubuntu-24.04") && run.stdout.contains("vmdk"), "{run}");
    pull(&k, &server.url("disk.qcow2"), &digest, &[]).success();
    let run = k.run(["image", "list", "-o", "json"]).success();
    let json: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
    let names: Vec<&str> =
        json["catalog"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["debian-12", "ubuntu-24.04"]);
    assert_eq!(json["other"][0]["sha256"], digest.as_str());
    assert_eq!(json["other"][0]["size_bytes"], 200_000);
    k.run(["image", "rm", &digest[..12]]).success();
    assert_eq!(files_in(&cache_dir(&k)), Vec::<std::path::PathBuf>::new());
    k.run(["image", "rm", &digest]).failure(reason::IMG_NOT_CACHED.exit_code);
}

#[test]
fn http_proxy_from_the_environment_is_used_and_no_proxy_bypasses_it() {
    let data = test_data(100_000, 15);
    let digest = sha256(&data);
    let proxy = {
        let data = data.clone();
        HttpServer::start(move |req: &Request, _| Reply::file(&data, req, true))
    };
    let k = Kubelab::new();
    // Nothing listens on port 9 (discard): only the proxy can answer. A loopback
    // target keeps the test on loopback even if the proxy were ignored.
    let url = "http://127.0.0.1:9/disk.qcow2";
    pull(&k, url, &digest, &[("HTTP_PROXY", &proxy.base())]).success();
    assert_eq!(proxy.requests()[0].target, url);

    let origin = file_server(test_data(100_000, 16));
    let other = sha256(&test_data(100_000, 16));
    let env = [("HTTP_PROXY", proxy.base()), ("NO_PROXY", "127.0.0.1".to_owned())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    pull(&k, &origin.url("other.qcow2"), &other, &env).success();
    assert_eq!(proxy.requests().len(), 1, "NO_PROXY host went around the proxy");
    assert_eq!(origin.requests().len(), 1);
}

/// `image bake` checks its options before it creates anything: no profile, no cache.
#[test]
fn bake_refuses_bad_options_before_creating_anything() {
    let k = Kubelab::new();
    for (args, reason, why) in [
        (
            ["--registry-mirror", "http://u:p@mirror:5000"],
            &reason::PROFILE_BAD_OPTION,
            "credentials",
        ),
        (["--registry-mirror", "ftp://mirror"], &reason::PROFILE_BAD_OPTION, "http:// or https://"),
        (["--kubernetes-version", "v1.99.0"], &reason::K8S_VERSION_UNSUPPORTED, "not supported"),
    ] {
        let run = k.run(["image", "bake"].into_iter().chain(args)).failure(reason.exit_code);
        assert!(run.stderr.contains(why) && run.stderr.contains(reason.id), "{run}");
        assert!(files_in(&k.home().join("profiles")).is_empty(), "{run}");
        assert!(!cache_dir(&k).exists(), "{run}");
    }
}
