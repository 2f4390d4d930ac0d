//! The web dashboard's routes against a real Redis, over real HTTP: pages, escaping,
//! actions and their guards (anti-forgery value, origin, token, read-only), metrics.

use std::io::{Read, Write};

use tiger::{Dashboard, State, testing::wait_until};
use tiger_tests::*;

/// Status, headers and body of one HTTP/1.1 request to the dashboard on `port`.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

fn http(port: u16, method: &str, path: &str, headers: &[&str], body: &str) -> Answer {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|h| h.to_ascii_lowercase().starts_with("host:"))
    {
        request.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    if !body.is_empty() {
        request.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

impl Answer {
    /// The value of the header `wanted` (the first, any case), or "".
    fn header(&self, wanted: &str) -> &str {
        self.head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(": ")?;
                name.eq_ignore_ascii_case(wanted).then_some(value)
            })
            .unwrap_or_default()
    }

    /// The `Location` the answer sends the browser to.
    fn location(&self) -> &str {
        self.header("location")
    }
}

/// Serves `dashboard` for `fx` on a free port, in the background; returns the port.
async fn serve(fx: &Fixture, dashboard: Dashboard) -> u16 {
    let port = tiger::testing::free_port().unwrap();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    tokio::spawn(dashboard.serve(fx.tiger.clone(), addr));
    wait_until(
        std::time::Duration::from_secs(10),
        "the dashboard to listen",
        || async move { std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() },
    )
    .await;
    port
}

/// The anti-forgery value of the forms on `page`.
fn csrf(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a form") + "name=\"csrf\" value=\"".len();
    page[at..].split('"').next().unwrap().to_owned()
}

async fn failed_task(fx: &Fixture, argument: &str) -> String {
    let id = charge::delay(argument.to_owned(), 7)
        .queue("dash")
        .on(&fx.tiger)
        .await
        .unwrap();
    fx.drain_with(|w| w.queues(["dash"])).await;
    id.as_str().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_show_the_queues_and_escape_what_tasks_hold() {
    let fx = Fixture::new().await;
    let id = failed_task(&fx, "<script>alert('x')</script>").await;
    note::delay(token(), "queued".into())
        .queue("dash")
        .on(&fx.tiger)
        .await
        .unwrap();
    let port = serve(&fx, Dashboard::new()).await;

    let overview = http(port, "GET", "/", &[], "");
    assert_eq!(overview.status, 200);
    assert!(overview.body.contains("<td>dash</td>"), "{}", overview.body);
    assert!(
        overview.body.contains("<p id=\"empty\" hidden>"),
        "the word for no queues is hidden: {}",
        overview.body
    );
    assert!(
        overview.body.contains("href=\"/queue/dash/error\">1</a>"),
        "{}",
        overview.body
    );
    let stats: serde_json::Value =
        serde_json::from_str(&http(port, "GET", "/api/stats", &[], "").body).unwrap();
    assert_eq!(stats["dash"]["queued"], 1);

    let listed = http(port, "GET", "/queue/dash/error", &[], "");
    assert_eq!(listed.status, 200);
    assert!(listed.body.contains(&id) && listed.body.contains(charge::NAME));
    assert!(
        listed
            .body
            .contains(&format!("title=\"{id}\">{}…</a>", &id[..12]))
            && listed.body.contains("<th>failed</th>"),
        "ids cut to 12 digits (whole in the title), the time said for the state: {}",
        listed.body
    );
    for page in [
        &listed.body,
        &http(port, "GET", &format!("/task/{id}"), &[], "").body,
    ] {
        assert!(
            !page.contains("<script>alert"),
            "an argument rendered as HTML: {page}"
        );
        assert!(page.contains("&lt;script&gt;"), "{page}");
    }
    let task = http(port, "GET", &format!("/task/{id}"), &[], "");
    assert!(task.body.contains("ChargeError") && task.body.contains("card declined for 7 cents"));
    assert!(task.body.contains("action=\"") && task.body.contains(">retry</button>"));
    assert!(
        task.body
            .contains("<tr><th>function</th><td>tiger_tests:charge</td></tr>")
            && task.body.contains("<tr><th>time_last_queued</th><td>20"),
        "the options, the function and the times as dates: {}",
        task.body
    );
    assert_eq!(http(port, "GET", "/task/nope", &[], "").status, 404);
    assert_eq!(http(port, "GET", "/queue/dash/stuck", &[], "").status, 404);

    let metrics = http(port, "GET", "/metrics", &[], "");
    assert!(
        metrics
            .body
            .contains("tiger_queue_tasks{queue=\"dash\",state=\"error\"} 1"),
        "{}",
        metrics.body
    );
    assert!(
        metrics
            .header("content-type")
            .starts_with("text/plain; version=0.0.4"),
        "Prometheus's text format is named: {}",
        metrics.head
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_need_the_pages_value_and_a_same_site_origin() {
    let fx = Fixture::new().await;
    let id = failed_task(&fx, "a").await;
    let port = serve(&fx, Dashboard::new()).await;
    let value = csrf(&http(port, "GET", &format!("/task/{id}"), &[], "").body);
    let path = format!("/task/{id}/retry");
    let form = format!("csrf={value}&queue=dash&state=error");

    let forged = http(
        port,
        "POST",
        &path,
        &[],
        "csrf=guess&queue=dash&state=error",
    );
    assert_eq!(forged.status, 403);
    let cross = http(port, "POST", &path, &["Origin: http://evil.example"], &form);
    assert_eq!(cross.status, 403);
    assert_eq!(
        fx.ids(State::Error, "dash").await,
        [id.as_str()],
        "nothing changed"
    );

    let retried = http(
        port,
        "POST",
        &path,
        &[&format!("Origin: http://127.0.0.1:{port}")],
        &form,
    );
    assert_eq!(retried.status, 303, "{}", retried.body);
    assert_eq!(fx.ids(State::Queued, "dash").await, [id.as_str()]);
    assert_eq!(retried.location(), format!("../{id}?done=retried"));
    let after = http(port, "GET", &format!("/task/{id}?done=retried"), &[], "");
    assert!(
        after.body.contains("Retried: the task is queued again.")
            && after
                .body
                .contains("<h2><a href=\"/queue/dash/queued\">dash</a> · queued</h2>"),
        "the page says what was done and links the task's queue: {}",
        after.body
    );
    // The same form again: the task is queued now.
    assert_eq!(http(port, "POST", &path, &[], &form).status, 409);
    // A worker runs it: it fails again and is back in error with two records.
    fx.drain_with(|w| w.queues(["dash"])).await;
    let delete = format!("/task/{id}/delete");
    let deleted = http(port, "POST", &delete, &[], &form);
    assert_eq!(deleted.status, 303);
    assert!(fx.keys().await.is_empty());
    // The task is gone: back to the list it was in, which says so.
    assert_eq!(
        deleted.location(),
        format!("../../queue/dash/error?done=deleted&task={id}")
    );
    let list = http(
        port,
        "GET",
        &format!("/queue/dash/error?done=deleted&task={id}"),
        &[],
        "",
    );
    assert!(
        list.body.contains(&format!("Deleted task {id}.")),
        "{}",
        list.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_everything_and_read_only_refuses_actions() {
    let fx = Fixture::new().await;
    let id = failed_task(&fx, "a").await;
    let port = serve(&fx, Dashboard::new().token("s3cret").unwrap()).await;
    let page = http(port, "GET", "/", &[], "");
    assert_eq!(page.status, 303);
    assert!(
        page.head.to_ascii_lowercase().contains("location: /login"),
        "{}",
        page.head
    );
    for path in [
        "/api/stats",
        "/api/minutes",
        "/api/workers",
        "/chart.svg",
        "/metrics",
    ] {
        assert_eq!(http(port, "GET", path, &[], "").status, 401, "{path}");
    }
    assert_eq!(http(port, "GET", "/workers", &[], "").status, 303);
    assert_eq!(
        http(port, "GET", "/", &["Authorization: Bearer wrong"], "").status,
        303
    );
    assert_eq!(
        http(port, "GET", "/", &["Authorization: Bearer s3cret"], "").status,
        200
    );
    assert_eq!(
        http(port, "GET", "/", &["Authorization: bearer s3cret"], "").status,
        200,
        "the scheme's name is not case-sensitive"
    );
    // A page asked for without the token: the login form, which comes back to it.
    let asked = http(port, "GET", &format!("/task/{id}?x=1"), &[], "");
    assert_eq!(
        asked.location(),
        format!("/login?next=%2Ftask%2F{id}%3Fx%3D1")
    );
    let form = http(port, "GET", asked.location(), &[], "");
    assert!(
        form.body
            .contains(&format!("name=\"next\" value=\"/task/{id}?x=1\"")),
        "{}",
        form.body
    );
    let back = http(
        port,
        "POST",
        "/login",
        &[],
        &format!("token=s3cret&next=%2Ftask%2F{id}%3Fx%3D1"),
    );
    assert_eq!(back.location(), format!("/task/{id}?x=1"));
    for elsewhere in [
        "//evil.example/",
        "http://evil.example/",
        "/\\evil.example",
        "/a%0D%0Ab",
    ] {
        let login = http(
            port,
            "POST",
            "/login",
            &[],
            &format!("token=s3cret&next={elsewhere}"),
        );
        assert_eq!(
            login.location(),
            "/",
            "a login never leaves the dashboard: {elsewhere}"
        );
    }
    let login = http(port, "POST", "/login", &[], "token=s3cret");
    assert_eq!(login.status, 303);
    assert!(
        login.head.contains("HttpOnly; SameSite=Lax"),
        "{}",
        login.head
    );
    let cookie = login
        .header("set-cookie")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert!(!cookie.is_empty(), "a cookie: {}", login.head);
    let with_cookie = format!("Cookie: {cookie}");
    assert_eq!(
        http(port, "GET", &format!("/task/{id}"), &[&with_cookie], "").status,
        200
    );
    assert!(
        !cookie.contains("s3cret"),
        "the cookie holds a digest, not the token: {cookie}"
    );
    let wrong = http(port, "POST", "/login", &[], "token=nope");
    assert_eq!(wrong.status, 401);
    assert!(
        wrong.body.contains("That is not the token."),
        "{}",
        wrong.body
    );
    let foreign = http(
        port,
        "POST",
        "/login",
        &["Origin: http://evil.example"],
        "token=s3cret",
    );
    assert_eq!(foreign.status, 403, "a login posted from another site");
    assert_eq!(
        http(
            port,
            "POST",
            &format!("/task/{id}/delete"),
            &[],
            "csrf=x&queue=dash&state=error"
        )
        .status,
        401
    );

    let port = serve(&fx, Dashboard::new().read_only(true)).await;
    let task = http(port, "GET", &format!("/task/{id}"), &[], "");
    assert!(!task.body.contains("<form"), "read-only shows no actions");
    let refused = http(
        port,
        "POST",
        &format!("/task/{id}/delete"),
        &[],
        "csrf=x&queue=dash&state=error",
    );
    assert_eq!(refused.status, 403);
    assert_eq!(fx.ids(State::Error, "dash").await, [id.as_str()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_mounts_under_an_applications_own_path() {
    let fx = Fixture::new().await;
    let id = failed_task(&fx, "a").await;
    let app = axum::Router::new().nest(
        "/ops/tiger",
        Dashboard::new()
            .token("t")
            .unwrap()
            .router(fx.tiger.clone()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let bearer = "Authorization: Bearer t";
    let overview = http(port, "GET", "/ops/tiger", &[bearer], "");
    assert_eq!(overview.status, 200, "{}", overview.head);
    assert!(
        overview
            .body
            .contains("href=\"/ops/tiger/queue/dash/error\""),
        "{}",
        overview.body
    );
    assert!(overview.body.contains("data-base=\"/ops/tiger\""));
    let listed = http(port, "GET", "/ops/tiger/queue/dash/error", &[bearer], "");
    assert!(listed.body.contains(&format!("href=\"../../task/{id}\"")));
    assert!(
        listed.body.contains("<a href=\"/ops/tiger\">queues</a>")
            && listed
                .body
                .contains("<a href=\"/ops/tiger/workers\">workers</a>"),
        "the header links home and to the workers"
    );
    assert!(overview.body.contains("src=\"/ops/tiger/chart.svg\""));
    // Any other address under the mount leads back to the overview (`/ops/tiger/` never
    // reaches a router nested at `/ops/tiger`: axum answers it, as README says).
    for path in ["/ops/tiger/nope", "/ops/tiger/task/x/y/z"] {
        let lost = http(port, "GET", path, &[bearer], "");
        assert_eq!(lost.status, 404, "{path}");
        assert!(
            lost.body
                .contains("<a href=\"/ops/tiger\">See the queues</a>"),
            "{path}: {}",
            lost.body
        );
    }
    // Without the token, a page sends the browser to the mounted login form.
    let refused = http(port, "GET", "/ops/tiger/queue/dash/error", &[], "");
    assert_eq!(
        refused.location(),
        "/ops/tiger/login?next=%2Fops%2Ftiger%2Fqueue%2Fdash%2Ferror"
    );
    let login = http(
        port,
        "POST",
        "/ops/tiger/login",
        &[],
        "token=t&next=%2Fops%2Ftiger%2Fqueue%2Fdash%2Ferror",
    );
    assert_eq!(login.location(), "/ops/tiger/queue/dash/error");
    assert!(login.head.contains("Path=/ops/tiger"), "{}", login.head);
    for outside in [
        "%2Fother",
        "%2Fops%2Ftiger%2F..%2Fother",
        "%2Fops%2Ftiger%2F%252e%252E%2Fother",
        "%2Fops%2Ftiger%2F.%252E",
        "%2Fops%2Ftiger%2F.%2Ftask",
    ] {
        let login = http(
            port,
            "POST",
            "/ops/tiger/login",
            &[],
            &format!("token=t&next={outside}"),
        );
        assert_eq!(
            login.location(),
            "/ops/tiger",
            "a login goes on only to the dashboard's own pages: {outside}"
        );
    }
}

#[tokio::test]
async fn the_dashboard_subcommand_serves_until_interrupted() {
    let fx = Fixture::new().await;
    let port = tiger::testing::free_port().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tiger-test-worker"))
        .args([
            "dashboard",
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--read-only",
        ])
        .env("REDIS_URL", fx.redis.url())
        .env("TIGER_PREFIX", fx.tiger.keys().prefix())
        .env("TIGER_DASHBOARD_TOKEN", "tok")
        .spawn()
        .unwrap();
    wait_until(
        std::time::Duration::from_secs(20),
        "the dashboard to listen",
        || async move { std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() },
    )
    .await;
    assert_eq!(
        http(port, "GET", "/api/stats", &[], "").status,
        401,
        "the token from the environment"
    );
    assert_eq!(
        http(
            port,
            "GET",
            "/api/stats",
            &["Authorization: Bearer tok"],
            ""
        )
        .status,
        200
    );
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    assert_eq!(child.wait().unwrap().code(), Some(0));

    // Beyond loopback only with a token: anyone who can reach it could act on the tasks.
    let open = std::process::Command::new(env!("CARGO_BIN_EXE_tiger-test-worker"))
        .args(["dashboard", "--bind", "0.0.0.0:0"])
        .env("REDIS_URL", fx.redis.url())
        .env_remove("TIGER_DASHBOARD_TOKEN")
        .output()
        .unwrap();
    assert_eq!(open.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&open.stderr).contains("without a token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_it_answers_only_to_loopback_names_and_is_never_framed() {
    let fx = Fixture::new().await;
    let port = serve(&fx, Dashboard::new()).await;
    // A page elsewhere that points its own name at 127.0.0.1 (DNS rebinding) gets nothing.
    let rebound = http(port, "GET", "/", &["Host: evil.example"], "");
    assert_eq!(rebound.status, 403);
    assert_eq!(http(port, "GET", "/", &["Host: localhost"], "").status, 200);
    assert_eq!(
        http(port, "GET", "/", &["Host: [::1]:8080"], "").status,
        200
    );
    assert_eq!(
        http(port, "GET", "/", &["Host: [::1]evil.example"], "").status,
        403
    );
    let page = http(port, "GET", "/", &[], "");
    let head = page.head.to_ascii_lowercase();
    assert!(head.contains("x-frame-options: deny") && head.contains("frame-ancestors 'none'"));
    // With a token any name may be served.
    let port = serve(&fx, Dashboard::new().token("t").unwrap()).await;
    assert_eq!(
        http(
            port,
            "GET",
            "/",
            &["Host: tiger.internal", "Authorization: Bearer t"],
            ""
        )
        .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_names_link_safely_and_pages_bound_what_they_read() {
    let fx = Fixture::new().await;
    let keys = fx.tiger.keys().clone();
    let mut pipe = redis::pipe();
    pipe.cmd("SET")
        .arg(keys.task(".."))
        .arg(r#"{"id": "..", "func": "m:f"}"#)
        .ignore();
    pipe.cmd("ZADD")
        .arg(keys.queue(State::Error, "."))
        .arg(1)
        .arg("..")
        .ignore();
    pipe.cmd("SADD")
        .arg(keys.state_set(State::Error))
        .arg(".")
        .ignore();
    // A name with what a URL gives meaning to.
    pipe.cmd("ZADD")
        .arg(keys.queue(State::Error, "a/b?c#d e"))
        .arg(1)
        .arg("..")
        .ignore();
    pipe.cmd("SADD")
        .arg(keys.state_set(State::Error))
        .arg("a/b?c#d e")
        .ignore();
    for n in 0..120 {
        pipe.cmd("RPUSH")
            .arg(keys.executions(".."))
            .arg(format!(r#"{{"exception_name": "e{n}"}}"#))
            .ignore();
    }
    pipe.cmd("SET")
        .arg(keys.executions_count(".."))
        .arg(120)
        .ignore();
    pipe.query_async::<()>(&mut fx.tiger.connection())
        .await
        .unwrap();
    let port = serve(&fx, Dashboard::new()).await;
    let overview = http(port, "GET", "/", &[], "");
    assert!(
        overview.body.contains("href=\"/queue/./error\"")
            && overview
                .body
                .contains("href=\"/queue/a%2Fb%3Fc%23d%20e/error\""),
        "{}",
        overview.body
    );
    let odd = http(port, "GET", "/queue/a%2Fb%3Fc%23d%20e/error", &[], "");
    assert!(
        odd.body.contains("on <b>a/b?c#d e</b>"),
        "the link leads to the queue: {}",
        odd.body
    );
    // `.` and `..` are reached escaped by a client that keeps them (a browser does not).
    let listed = http(port, "GET", "/queue/%2E/error?utm=x&limit=0", &[], "");
    assert_eq!(
        listed.status, 200,
        "unknown and empty parameters are ignored"
    );
    assert!(
        listed.body.contains("href=\"../../task/..\""),
        "{}",
        listed.body
    );
    let task = http(port, "GET", "/task/%2E%2E", &[], "");
    assert!(
        task.body
            .contains("120 failed runs (the last 50 kept or shown)"),
        "{}",
        task.body
    );
    assert!(task.body.contains("e119") && !task.body.contains(">e69<"));
}

#[tokio::test]
async fn an_empty_or_unusable_token_is_refused_at_start() {
    let fx = Fixture::new().await;
    for token in ["", "a b", "a;b", "pässwörd"] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_tiger-test-worker"))
            .args(["dashboard", "--bind", "127.0.0.1:0"])
            .env("REDIS_URL", fx.redis.url())
            .env("TIGER_DASHBOARD_TOKEN", token)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "token {token:?}");
        assert!(String::from_utf8_lossy(&output.stderr).contains("dashboard token must be"));
        // The same from code: a blank setting is an error, not an open dashboard.
        assert!(
            matches!(Dashboard::new().token(token), Err(tiger::Error::Config(_))),
            "token {token:?}"
        );
    }
}

/// Sums the dashboard's per-minute counts of the last hour: processed, failed.
fn last_hour(port: u16) -> (u64, u64) {
    let minutes: Vec<serde_json::Value> =
        serde_json::from_str(&http(port, "GET", "/api/minutes", &[], "").body).unwrap();
    assert_eq!(minutes.len(), 60);
    minutes.iter().fold((0, 0), |(p, f), m| {
        (
            p.saturating_add(m["processed"].as_u64().unwrap()),
            f.saturating_add(m["failed"].as_u64().unwrap()),
        )
    })
}

fn workers(port: u16) -> Vec<serde_json::Value> {
    serde_json::from_str(&http(port, "GET", "/api/workers", &[], "").body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workers_page_and_the_chart_show_live_workers_and_what_they_ran() {
    let fx = Fixture::new().await;
    let port = serve(&fx, Dashboard::new()).await;
    assert_eq!(last_hour(port), (0, 0));
    assert!(workers(port).is_empty());

    let held = token();
    let worker = spawn_worker(
        tiger::Worker::new(fx.tiger.clone())
            .queues(["dash", "hold"])
            .exclude_queues(["dash.quiet"]),
    );
    for n in 0..3 {
        note::delay(token(), format!("{n}"))
            .queue("dash")
            .on(&fx.tiger)
            .await
            .unwrap();
    }
    charge::delay(token(), 9)
        .queue("dash")
        .on(&fx.tiger)
        .await
        .unwrap();
    let holding = hold::delay(held.clone()).on(&fx.tiger).await.unwrap();
    wait_until(
        std::time::Duration::from_secs(10),
        "four runs counted and the held task listed",
        || async {
            last_hour(port) == (4, 1)
                && workers(port)
                    .first()
                    .is_some_and(|w| w["in_flight_count"] == 1)
        },
    )
    .await;
    let entry = &workers(port)[0];
    assert_eq!(entry["queues"], serde_json::json!(["dash", "hold"]));
    assert_eq!(entry["exclude_queues"], serde_json::json!(["dash.quiet"]));
    assert_eq!(entry["in_flight"][0]["id"], holding.as_str());
    assert_eq!(
        (entry["processed"].as_u64(), entry["failed"].as_u64()),
        (Some(4), Some(1))
    );
    assert_eq!(entry["pid"], std::process::id());

    let page = http(port, "GET", "/workers", &[], "");
    assert_eq!(page.status, 200);
    let id = entry["id"].as_str().unwrap();
    assert!(page.body.contains(id), "{}", page.body);
    assert!(page.body.contains("dash, hold") && page.body.contains("1 of 10"));
    assert!(
        page.body.contains(&format!(
            "href=\"/task/{holding}\" title=\"{holding}\">hold · {}…</a>",
            &holding.as_str()[..12]
        )),
        "{}",
        page.body
    );
    let overview = http(port, "GET", "/", &[], "");
    assert!(
        overview
            .body
            .contains("<span id=\"workers\">1 worker</span> alive")
    );

    let chart = http(port, "GET", "/chart.svg", &[], "");
    assert_eq!(chart.status, 200);
    assert!(
        chart
            .head
            .to_ascii_lowercase()
            .contains("content-type: image/svg+xml")
    );
    assert!(
        chart.body.starts_with("<svg") && chart.body.contains("last hour: 4 processed, 1 failed"),
        "{}",
        chart.body
    );
    // A well-formed picture: every element closed, one failed bar drawn beside the others.
    assert_eq!(
        chart.body.matches("<rect").count(),
        chart.body.matches("</rect>").count()
    );
    assert!(chart.body.contains("fill=\"#d9534f\""));

    release(&held);
    worker.stop().await;
    assert!(
        workers(port).is_empty(),
        "a worker that stops leaves the registry"
    );
    assert_eq!(
        last_hour(port),
        (5, 1),
        "the last run is counted as the worker stops"
    );
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_vanishes_drops_out_of_the_registry() {
    let fx = Fixture::new().await;
    // An entry that was not renewed: its key expired, its id stays in the zset a while.
    let keys = fx.tiger.keys();
    let mut connection = fx.tiger.connection();
    let stale = unix_now() - 3600.0;
    let _: () = redis::pipe()
        .cmd("ZADD")
        .arg(keys.workers())
        .arg(stale)
        .arg("gone:1:x")
        .ignore()
        .cmd("ZADD")
        .arg(keys.workers())
        .arg(unix_now())
        .arg("expired:2:y")
        .ignore()
        .cmd("SET")
        .arg(keys.worker("garbled:3:z"))
        .arg("{not json")
        .ignore()
        .cmd("ZADD")
        .arg(keys.workers())
        .arg(unix_now())
        .arg("garbled:3:z")
        .ignore()
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(fx.tiger.workers().await.unwrap().is_empty());
    let port = serve(&fx, Dashboard::new()).await;
    let page = http(port, "GET", "/workers", &[], "");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("0 workers reported"), "{}", page.body);
    // A live worker prunes ids whose reports stopped.
    let worker = spawn_worker(tiger::Worker::new(fx.tiger.clone()).queues(["dash"]));
    wait_until(
        std::time::Duration::from_secs(10),
        "the worker to report",
        || async { workers(port).len() == 1 },
    )
    .await;
    let ids: Vec<String> = redis::cmd("ZRANGE")
        .arg(keys.workers())
        .arg(0)
        .arg(-1)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(!ids.contains(&"gone:1:x".to_owned()), "{ids:?}");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_the_dashboards_keys_costs_only_what_it_spoils() {
    let fx = Fixture::new().await;
    let keys = fx.tiger.keys();
    let this_minute = (unix_now() as i64) / 60 * 60;
    let _: () = redis::pipe()
        .cmd("SET")
        .arg(keys.workers())
        .arg("not a zset")
        .ignore()
        .cmd("HSET")
        .arg(keys.minute(this_minute - 60))
        .arg("processed")
        .arg("many")
        .ignore()
        .cmd("HSET")
        .arg(keys.minute(this_minute - 120))
        .arg("failed")
        .arg(u64::MAX)
        .ignore()
        .cmd("HSET")
        .arg(keys.minute(this_minute - 180))
        .arg("failed")
        .arg(u64::MAX)
        .ignore()
        .cmd("SET")
        .arg(keys.minute(this_minute - 240))
        .arg("not a hash")
        .ignore()
        // A queue whose key is not a zset.
        .cmd("SADD")
        .arg(keys.state_set(State::Error))
        .arg("weird")
        .ignore()
        .cmd("SET")
        .arg(keys.queue(State::Error, "weird"))
        .arg("not a zset")
        .ignore()
        .query_async(&mut fx.tiger.connection())
        .await
        .unwrap();
    let port = serve(&fx, Dashboard::new()).await;
    // A worker whose registry entry Redis refuses still runs its tasks, and counts each
    // run once however many reports go out.
    let label = token();
    let worker = spawn_worker(tiger::Worker::new(fx.tiger.clone()).queues(["dash"]));
    for (n, text) in ["first", "second"].into_iter().enumerate() {
        note::delay(label.clone(), text.into())
            .queue("dash")
            .on(&fx.tiger)
            .await
            .unwrap();
        wait_until(
            std::time::Duration::from_secs(10),
            "the run to be counted",
            || async { last_hour(port).0 == n as u64 + 1 },
        )
        .await;
    }
    worker.stop().await;
    assert_eq!(take::<String>(&label), ["first", "second"]);
    let overview = http(port, "GET", "/", &[], "");
    assert_eq!(overview.status, 200, "the counts are still shown");
    assert!(
        overview.body.contains("? workers</span> alive"),
        "{}",
        overview.body
    );
    let chart = http(port, "GET", "/chart.svg", &[], "");
    assert_eq!(chart.status, 200);
    let summary = chart.body.split("</text>").next().unwrap_or_default();
    assert!(
        summary.ends_with(&format!("last hour: 2 processed, {} failed", u64::MAX)),
        "each run once, and a minute whose counts are not numbers reads 0: {summary}"
    );
    let workers = http(port, "GET", "/workers", &[], "");
    assert_eq!(workers.status, 503);
    assert!(workers.body.contains("WRONGTYPE"), "{}", workers.body);
    // Every other task is still found, shown and acted on.
    let id = failed_task(&fx, "a").await;
    let task = http(port, "GET", &format!("/task/{id}"), &[], "");
    assert_eq!(task.status, 200, "{}", task.body);
    let form = format!("csrf={}&queue=dash&state=error", csrf(&task.body));
    let deleted = http(port, "POST", &format!("/task/{id}/delete"), &[], &form);
    assert_eq!(deleted.status, 303, "{}", deleted.body);
}

/// A task `id` in error on queue `q`, written through a connection of its own to `url`.
async fn plant_errored(url: &str, keys: &tiger::keys::Keys, id: &str) {
    let mut own = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::pipe()
        .cmd("SET")
        .arg(keys.task(id))
        .arg(format!(r#"{{"id": "{id}", "func": "m:f"}}"#))
        .ignore()
        .cmd("ZADD")
        .arg(keys.queue(State::Error, "q"))
        .arg(1)
        .arg(id)
        .ignore()
        .cmd("SADD")
        .arg(keys.state_set(State::Error))
        .arg("q")
        .ignore()
        .query_async(&mut own)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_answer_at_once_after_redis_restarts() {
    // A private server: this test kills it.
    let mut server = tiger::testing::RedisServer::start().unwrap();
    let config = tiger::Config {
        redis_prefix: tiger::testing::unique_prefix(),
        ..tiger::testing::test_config()
    };
    let tiger = tiger::Tiger::connect_with(&server.url(), config)
        .await
        .unwrap();
    let port = tiger::testing::free_port().unwrap();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    tokio::spawn(Dashboard::new().serve(tiger.clone(), addr));
    wait_until(
        std::time::Duration::from_secs(10),
        "the dashboard to listen",
        || async move { std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() },
    )
    .await;
    assert_eq!(http(port, "GET", "/", &[], "").status, 200);
    // Nothing asks while it is down: the first request after the restart meets the
    // dropped connection.
    server.restart().unwrap();
    for path in ["/", "/api/stats", "/chart.svg", "/workers", "/metrics"] {
        let answer = http(port, "GET", path, &[], "");
        assert_eq!(
            answer.status, 200,
            "{path} just after the restart: {}",
            answer.body
        );
    }
    // An action too: the first one after a restart goes through. The task is written
    // through a connection of its own, so the dashboard's meets the restart first.
    let id = token();
    plant_errored(&server.url(), tiger.keys(), &id).await;
    let value = csrf(&http(port, "GET", &format!("/task/{id}"), &[], "").body);
    server.restart().unwrap();
    plant_errored(&server.url(), tiger.keys(), &id).await;
    let retried = http(
        port,
        "POST",
        &format!("/task/{id}/retry"),
        &[],
        &format!("csrf={value}&queue=q&state=error"),
    );
    assert_eq!(retried.status, 303, "{}", retried.body);

    // An action that Redis holds past the bound is not called failed: it may yet happen.
    plant_errored(&server.url(), tiger.keys(), &id).await;
    let mut own = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(8000)
        .arg("WRITE")
        .query_async(&mut own)
        .await
        .unwrap();
    let held = http(
        port,
        "POST",
        &format!("/task/{id}/delete"),
        &[],
        &format!("csrf={value}&queue=q&state=error"),
    );
    assert_eq!(held.status, 504, "{}", held.body);
    assert!(held.body.contains("may still take effect"), "{}", held.body);
    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query_async(&mut own)
        .await
        .unwrap();

    // A Redis that hangs (stopped, not gone) gets a 503 within the documented 5 s, not
    // after a 10 s response timeout for each try.
    server.freeze().unwrap();
    for path in ["/api/stats", "/metrics"] {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(8)))
            .unwrap();
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        let read = stream.read_to_string(&mut answer);
        assert!(read.is_ok(), "{path} answered within 8 s: {read:?}");
        assert!(answer.starts_with("HTTP/1.1 503"), "{path}: {answer}");
    }
    server.thaw().unwrap();
}
