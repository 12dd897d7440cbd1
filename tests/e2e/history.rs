//! Pages of history: `GET /events?events=…&before=…|after=…&limit=…`, newest first below an id or
//! oldest first above one, with the filter syntax and the scopes of `/sse`, each page naming the
//! cursor of the next; the same on a cluster node, where the ids are JetStream's.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::TestServer;

const NAMES: [&str; 4] = ["room.1.msg", "room.2.msg", "room.1.typing", "profile"];

async fn page(server: &TestServer, jwt: &str, query: &[(&str, &str)]) -> (StatusCode, Value) {
    let response = (server.http.get(server.endpoint("/events")))
        .query(query)
        .bearer_auth(jwt)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Follows `next` from the first page of `query`, with `cursor` (`before` or `after`) as the
/// cursor parameter: every page's (name, id) pairs.
async fn every_page(
    server: &TestServer,
    jwt: &str,
    query: &[(&str, &str)],
    cursor: &str,
) -> Vec<Vec<(String, u64)>> {
    let mut pages = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let mut query = query.to_vec();
        if let Some(id) = &next {
            query.push((cursor, id));
        }
        let (status, body) = page(server, jwt, &query).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let events = body["events"].as_array().unwrap();
        for event in events {
            assert!(
                event["timestamp"].as_u64().unwrap() > 1_700_000_000_000,
                "{event}"
            );
            assert_eq!(event["data"]["name"], event["event"], "{event}");
        }
        pages.push(
            events
                .iter()
                .map(|e| (e["event"].as_str().unwrap().to_owned(), e["id"].as_u64().unwrap()))
                .collect(),
        );
        match body["next"].as_u64() {
            Some(id) => next = Some(id.to_string()),
            None => return pages,
        }
        assert!(pages.len() < 100, "pages never end");
    }
}

#[tokio::test]
async fn history_pages_through_a_filter_in_both_directions() {
    let server = TestServer::start().await;
    history(&server, &server).await;
}

/// The same on a cluster node: the pages come from JetStream, above the event-log seam.
#[tokio::test]
async fn history_pages_work_the_same_in_a_cluster() {
    let nats = crate::support::nats::NatsCluster::start().await;
    // Written through one node, paged through another.
    let (writer, reader) = (
        crate::cluster::node(&nats).await,
        crate::cluster::node(&nats).await,
    );
    history(&writer, &reader).await;
}

/// Inserts through `server`, reads the pages through `reader` (another node in a cluster).
async fn history(server: &TestServer, reader: &TestServer) {
    let jwt = server.signup("historian", "chat").await;
    let stranger = server.signup("stranger", "elsewhere").await;
    let mut inserted = Vec::new();
    for n in 0..120 {
        if n == 60 {
            // Another tenant's events in between: on JetStream they spread this tenant's ids apart,
            // so a page newest first reads more than one window of sequences.
            let bodies = (0..600).map(|i| json!({"event": "noise", "data": i}));
            let answers =
                crate::support::insert_all_at_once(std::slice::from_ref(&server.url), &stranger, bodies)
                    .await;
            assert!(answers.iter().all(|(status, _)| *status == StatusCode::OK));
        }
        let name = NAMES[n % 4];
        inserted.push((
            name.to_owned(),
            server.insert_ok(&jwt, name, json!({"name": name, "n": n})).await,
        ));
    }
    // Another tenant's events never show.
    server
        .insert_ok(&stranger, "room.1.msg", json!({"name": "room.1.msg"}))
        .await;

    let rooms_1: Vec<(String, u64)> = inserted
        .iter()
        .filter(|(name, _)| name.starts_with("room.1."))
        .cloned()
        .collect();
    let newest_first = every_page(reader, &jwt, &[("events", "room.1.*"), ("limit", "25")], "before").await;
    assert_eq!(
        newest_first.iter().map(Vec::len).collect::<Vec<_>>(),
        [25, 25, 10]
    );
    let newest_first: Vec<(String, u64)> = newest_first.concat();
    assert_eq!(newest_first, rooms_1.iter().rev().cloned().collect::<Vec<_>>());
    let oldest_first = every_page(
        reader,
        &jwt,
        &[("events", "room.1.*,profile"), ("after", "0"), ("limit", "500")],
        "after",
    )
    .await;
    let expected: Vec<(String, u64)> = inserted
        .iter()
        .filter(|(name, _)| name != "room.2.msg")
        .cloned()
        .collect();
    assert_eq!(oldest_first, [expected]);

    // Without a filter: every event of the tenant; the default limit is 100.
    let (status, body) = page(reader, &jwt, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["events"].as_array().unwrap().len(), 100);
    assert_eq!(body["events"][0]["id"].as_u64(), inserted.last().map(|e| e.1));
    // One exact name, below an id taken from the middle.
    let middle = inserted[60].1.to_string();
    let profiles = every_page(
        reader,
        &jwt,
        &[("events", "profile"), ("before", &middle), ("limit", "500")],
        "before",
    )
    .await;
    let expected: Vec<(String, u64)> = inserted[..60]
        .iter()
        .rev()
        .filter(|(name, _)| name == "profile")
        .cloned()
        .collect();
    assert_eq!(profiles, [expected]);
    let (_, body) = page(reader, &stranger, &[("events", "room.1.*")]).await;
    assert_eq!(
        body["events"].as_array().unwrap().len(),
        1,
        "only the stranger's own: {body}"
    );
    let (_, body) = page(reader, &stranger, &[("limit", "500")]).await;
    assert_eq!(body["events"].as_array().unwrap().len(), 500, "{body}");
    assert!(
        body["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["event"] != "profile")
    );
}

#[tokio::test]
async fn bad_page_requests_are_400s_that_name_the_problem() {
    let server = TestServer::start().await;
    let jwt = server.signup("asker", "t").await;
    server.insert_ok(&jwt, "e", json!({"name": "e"})).await;
    for (query, problem) in [
        (&[("before", "5"), ("after", "1")][..], "not both"),
        (&[("before", "x")], "before"),
        (&[("after", "-1")], "after"),
        (&[("after", "99999999999999999999999")], "after"),
        (&[("limit", "0")], "limit"),
        (&[("limit", "501")], "limit"),
        (&[("limit", "ten")], "limit"),
        (&[("events", "a,,b")], "empty"),
        (&[("events", "ro*om")], "`*`"),
    ] {
        let (status, body) = page(&server, &jwt, query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query:?}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(problem),
            "{query:?}: {body}"
        );
    }
    let (status, body) = page(&server, &jwt, &[("limit", "500"), ("before", "0")]).await;
    assert_eq!(
        (status, &body["events"], &body["next"]),
        (StatusCode::OK, &json!([]), &Value::Null)
    );
    let anonymous = server.http.get(server.endpoint("/events")).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn with_enforced_scopes_a_page_holds_only_the_names_the_get_scopes_cover() {
    let server = TestServer::start_with(&["--enforce_scopes"]).await;
    let writer = scoped(&server, "writer", &["*:post", "*:get"]).await;
    for name in ["news", "secret", "news", "chat"] {
        server.insert_ok(&writer, name, json!({"name": name})).await;
    }
    let reader = scoped(&server, "reader", &["news:get", "chat:get"]).await;
    let names = |body: &Value| -> Vec<String> {
        body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, body) = page(&server, &reader, &[]).await;
    assert_eq!(names(&body), ["chat", "news", "news"]);
    let (_, body) = page(&server, &reader, &[("events", "secret,news")]).await;
    assert_eq!(names(&body), ["news", "news"]);
    let poster = scoped(&server, "poster", &["news:post"]).await;
    assert_eq!(page(&server, &poster, &[]).await.0, StatusCode::FORBIDDEN);
}

async fn scoped(server: &TestServer, username: &str, scopes: &[&str]) -> String {
    let (status, body) = server
        .create_user_with(json!({"username": username, "tenant_name": "t", "scopes": scopes}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.login(username).await
}

/// Names whose parts a prefix can cut anywhere: dots at either end, empty parts, a part that is a
/// prefix of another.
const PARTED: [&str; 10] = [
    "a", "ab", "a.b", "a.bc", "a.b.c", "a..b", "a.", ".a", "a.b.", "b.a",
];

/// A prefix filter is a prefix of the name's text, wherever it cuts a part; exact names are exact.
fn lets_through(filter: &str, name: &str) -> bool {
    filter.split(',').any(|item| match item.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == item,
    })
}

#[tokio::test]
async fn prefix_pages_cut_names_anywhere_in_a_part() {
    let server = TestServer::start().await;
    pages_of_parted_names(&server).await;
}

/// On JetStream a prefix of whole parts is a subject filter and any other prefix reads more
/// subjects than it keeps: either way a page holds what the filter lets through, no more.
#[tokio::test]
async fn prefix_pages_cut_names_anywhere_in_a_part_in_a_cluster() {
    let nats = crate::support::nats::NatsCluster::start().await;
    pages_of_parted_names(&crate::cluster::node(&nats).await).await;
}

async fn pages_of_parted_names(server: &TestServer) {
    let jwt = server.signup("parter", "parts").await;
    let mut inserted = Vec::new();
    for round in 0..2 {
        for name in PARTED {
            let id = server
                .insert_ok(&jwt, name, json!({"name": name, "round": round}))
                .await;
            inserted.push((name.to_owned(), id));
        }
    }
    let filters = [
        "a.*",
        "a.b*",
        "a.b.*",
        "a..*",
        ".*",
        "a*",
        "a.b,a..b",
        "a.b.*,b.a",
        "a.b,a.*",
        "a.,.a",
        "b*",
    ];
    for filter in filters {
        let expected: Vec<(String, u64)> = inserted
            .iter()
            .filter(|(name, _)| lets_through(filter, name))
            .cloned()
            .collect();
        let newest_first = every_page(server, &jwt, &[("events", filter), ("limit", "3")], "before").await;
        let newest_first = newest_first.concat();
        assert_eq!(
            newest_first,
            expected.iter().rev().cloned().collect::<Vec<_>>(),
            "newest first, {filter}"
        );
        let oldest_first = every_page(server, &jwt, &[("events", filter), ("after", "0")], "after").await;
        assert_eq!(oldest_first.concat(), expected, "oldest first, {filter}");
    }
}

/// nats-server 2.15 holds a stream to 1,000 consumers by default, and a page newest first reads
/// through a consumer of its own: each is deleted once its page is read (left alone it would stay
/// 30 s), so a cluster node answers more pages than that in a row.
#[tokio::test]
async fn a_cluster_node_answers_more_pages_in_a_row_than_the_servers_consumer_limit() {
    use futures_util::StreamExt;
    let nats = crate::support::nats::NatsCluster::start().await;
    let server = crate::cluster::node(&nats).await;
    let jwt = server.signup("reader", "pages").await;
    server.insert_ok(&jwt, "e", json!({"name": "e"})).await;
    let answers: Vec<(StatusCode, Value)> = futures_util::stream::iter(0..1_100)
        .map(|_| page(&server, &jwt, &[("events", "e")]))
        .buffer_unordered(8)
        .collect()
        .await;
    let refused: Vec<&(StatusCode, Value)> = answers
        .iter()
        .filter(|(status, body)| {
            *status != StatusCode::OK || body["events"].as_array().map(Vec::len) != Some(1)
        })
        .collect();
    assert!(
        refused.is_empty(),
        "{} of 1,100 pages failed, the first {:?}",
        refused.len(),
        refused.first()
    );
}
