//! The API document at `/openapi.json` tells the truth: a client written from it can call every
//! operation it lists and gets only the answers it documents, and nothing the server serves is
//! missing from it.

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, PASSWORD, TestServer};

/// The router, read at build time: its path literals are the routes the server serves.
const ROUTER_SOURCE: &str = include_str!("../../host/src/http/mod.rs");

/// Every method a path item can hold, as OpenAPI spells them.
const METHODS: [&str; 8] = [
    "get", "head", "post", "put", "delete", "patch", "options", "trace",
];

/// The document as the server serves it.
async fn fetch_document(server: &TestServer) -> Value {
    let response = server
        .http
        .get(server.endpoint("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(media_type(&response).as_deref(), Some("application/json"));
    let document: Value = response.json().await.expect("/openapi.json is JSON");
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|version| version.starts_with("3.1.")),
        "not OpenAPI 3.1: {}",
        document["openapi"]
    );
    assert!(document["info"]["title"].is_string() && document["info"]["version"].is_string());
    document
}

/// Every (method, path, operation) in the document.
fn operations(document: &Value) -> Vec<(String, String, Value)> {
    let paths = document["paths"].as_object().expect("the document has paths");
    assert!(!paths.is_empty());
    let mut operations = Vec::new();
    for (path, item) in paths {
        for method in METHODS {
            if let Some(operation) = item.get(method) {
                operations.push((method.to_owned(), path.clone(), operation.clone()));
            }
        }
    }
    operations
}

/// `value`, or what its `$ref` points at (local references only, as the document uses).
fn resolve<'a>(document: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').expect("a local $ref");
            resolve(
                document,
                document
                    .pointer(pointer)
                    .unwrap_or_else(|| panic!("dangling {reference}")),
            )
        }
        None => value,
    }
}

fn media_type(response: &Response) -> Option<String> {
    let value = response.headers().get("content-type")?.to_str().ok()?;
    Some(value.split(';').next().unwrap().trim().to_owned())
}

/// Sends `request` and checks that the document lists the answer for `operation`: its status,
/// required headers and media type, and for JSON errors the `{"error": "..."}` shape. Returns the
/// status. A stream (`text/event-stream`) is checked by its headers and left unread.
async fn send_documented(
    document: &Value,
    (method, path, operation): &(String, String, Value),
    request: RequestBuilder,
) -> StatusCode {
    let response = request.send().await.unwrap();
    let status = response.status();
    let Some(documented) = operation["responses"].get(status.as_str()) else {
        let body = response.text().await.unwrap_or_default();
        panic!("{method} {path} answered {status}, which the document does not list: {body}");
    };
    let documented = resolve(document, documented);
    let headers = documented["headers"].as_object().cloned().unwrap_or_default();
    for (name, header) in &headers {
        if resolve(document, header)["required"] == true {
            assert!(
                response.headers().contains_key(name.as_str()),
                "{method} {path} {status} lacks the documented header {name}"
            );
        }
    }
    let content = documented["content"].as_object().cloned().unwrap_or_default();
    let answered_type = media_type(&response);
    if answered_type.as_deref() == Some("text/event-stream") {
        assert!(
            content.contains_key("text/event-stream"),
            "{method} {path} {status}: a stream?"
        );
        return status;
    }
    let body = response.bytes().await.unwrap();
    if content.is_empty() {
        assert!(
            body.is_empty(),
            "{method} {path} {status} documents no body but sent one"
        );
        return status;
    }
    let answered_type = answered_type.unwrap_or_default();
    assert!(
        content.contains_key(&answered_type),
        "{method} {path} {status} answered {answered_type}, documented {:?}",
        content.keys().collect::<Vec<_>>()
    );
    let schema = &content[&answered_type]["schema"];
    if answered_type == "application/json" {
        let json: Value = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{method} {path} {status} is not JSON ({e}): {body:?}"));
        if schema["$ref"] == "#/components/schemas/Error" {
            let error = json
                .as_object()
                .filter(|o| o.len() == 1 && o["error"].is_string());
            assert!(
                error.is_some(),
                "{method} {path} {status} is not an error object: {json}"
            );
        }
    }
    status
}

/// Creates the users the requests below act on and returns the JWT of `reader`, who inserts,
/// verifies and subscribes.
async fn fixture(server: &TestServer) -> String {
    let jwt = server.signup("reader", "docs").await;
    let two_factor = json!({"username": "authenticator", "tenant_name": "docs", "two_factor": true});
    assert_eq!(server.create_user_with(two_factor).await.0, StatusCode::OK);
    for user in ["leaver", "forgetful"] {
        assert_eq!(server.create_user(user, "docs").await.0, StatusCode::OK);
    }
    jwt
}

fn admin(fields: Value) -> Value {
    let mut body = json!({"admin_token": ADMIN_TOKEN});
    body.as_object_mut()
        .unwrap()
        .extend(fields.as_object().unwrap().clone());
    body
}

/// A valid request for the operation `method path`, as a client that read the document sends it.
async fn valid_request(server: &TestServer, jwt: &str, method: &str, path: &str) -> RequestBuilder {
    let http = &server.http;
    let url = server.endpoint(path);
    match (method, path) {
        ("options", _) => http
            .request(Method::OPTIONS, url)
            .header("origin", "https://app.example")
            .header("access-control-request-method", "POST"),
        ("get", "/" | "/openapi.json") => http.get(url),
        ("head", "/") => http.head(url),
        ("get", "/verify" | "/sse") => http.get(url).bearer_auth(jwt),
        ("get", "/presence") => http.get(url).bearer_auth(jwt),
        ("get", "/events") => http.get(format!("{url}?events=profile&limit=2")).bearer_auth(jwt),
        ("post", "/insert") => http
            .post(url)
            .bearer_auth(jwt)
            .json(&json!({"event": "profile", "data": {"name": "Ada"}})),
        ("post", "/login") => http
            .post(url)
            .json(&json!({"username": "reader", "password": PASSWORD})),
        ("post", "/create_user") => {
            let fields = json!({"username": "newcomer", "password": PASSWORD, "tenant_name": "docs"});
            http.post(url).json(&admin(fields))
        }
        ("post", "/list_users") => http.post(url).json(&admin(json!({}))),
        ("post", "/get_user") => http.post(url).json(&admin(json!({"username": "reader"}))),
        // A data-only change: the reader's JWT stays good for the requests after this one.
        ("post", "/update_user") => {
            let fields = json!({"username": "reader", "data": {"plan": "pro"}, "email": null});
            http.post(url).json(&admin(fields))
        }
        ("post", "/revoke_user" | "/unrevoke_user") => {
            http.post(url).json(&admin(json!({"username": "leaver"})))
        }
        ("post", "/create_qr") => {
            let fields = json!({"username": "authenticator", "issuer": "Broker"});
            http.post(url).json(&admin(fields))
        }
        ("post", "/delete_user") => {
            let (status, body) = server.create_user("leaving", "docs").await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let fields = json!({"username": "leaving", "erase_events": true});
            http.post(url).json(&admin(fields))
        }
        ("post", "/delete_tenant") => http.post(url).json(&admin(json!({"tenant_name": "closing"}))),
        ("post", "/create_totp") => http.post(url).json(&admin(json!({"username": "forgetful"}))),
        ("post", "/password_reset") => {
            let (status, code) = server
                .post("/create_totp", &admin(json!({"username": "forgetful"})))
                .await;
            assert_eq!(status, StatusCode::OK, "{code}");
            let body = json!({"totp": code["totp"], "username": "forgetful", "password": "a new passphrase"});
            http.post(url).json(&body)
        }
        ("get", "/admin/guests") => http.get(url).header("x-admin-token", ADMIN_TOKEN),
        ("get", "/admin/sse") => http
            .get(format!("{url}?tenant=docs"))
            .header("x-admin-token", ADMIN_TOKEN),
        ("get", "/admin/events") => http
            .get(format!("{url}?tenant=docs&limit=3"))
            .header("x-admin-token", ADMIN_TOKEN),
        ("post", "/admin/insert") => http
            .post(url)
            .header("x-admin-token", ADMIN_TOKEN)
            .json(&json!({"tenant_name": "docs", "event": "profile", "data": {"name": "Ada"}})),
        ("get", "/admin/tenant_limits") => http
            .get(format!("{url}?tenant=docs"))
            .header("x-admin-token", ADMIN_TOKEN),
        ("post", "/admin/tenant_limits") => http
            .post(url)
            .header("x-admin-token", ADMIN_TOKEN)
            .json(&json!({"tenant": "docs", "limits": {"tenant_insert_rate": 2500.5, "user_streams": 7}})),
        ("get", "/admin/webhooks") => http
            .get(format!("{url}?tenant=docs"))
            .header("x-admin-token", ADMIN_TOKEN),
        ("post", "/admin/webhooks") => http
            .post(url)
            .header("x-admin-token", ADMIN_TOKEN)
            .json(&documented_webhook()),
        ("post", "/admin/webhooks/update") => {
            let id = server
                .register_webhook("docs", "http://127.0.0.1:9/hook", "order.*")
                .await;
            http.post(url)
                .header("x-admin-token", ADMIN_TOKEN)
                .json(&json!({"id": id, "events": "profile"}))
        }
        ("post", "/admin/webhooks/delete" | "/admin/webhooks/resume") => {
            let id = server
                .register_webhook("docs", "http://127.0.0.1:9/hook", "order.*")
                .await;
            http.post(url)
                .header("x-admin-token", ADMIN_TOKEN)
                .json(&json!({"id": id}))
        }
        ("get", "/console") => http.get(url),
        _ => panic!("the document lists {method} {path}, which this test has no request for: add one"),
    }
}

/// A webhook as the document's example registers it (to a port nothing listens on: its
/// deliveries fail and retry in the background, which no request here depends on).
fn documented_webhook() -> Value {
    let secret = crate::support::webhooks::SECRET;
    json!({"tenant": "docs", "url": "http://127.0.0.1:9/hook", "events": "order.*", "secret": secret})
}

/// Whether the operation authenticates with the `X-Admin-Token` header.
fn uses_admin_token(details: &Value) -> bool {
    details["security"]
        .as_array()
        .is_some_and(|requirements| requirements.iter().any(|r| r.get("adminToken").is_some()))
}

fn reqwest_method(method: &str) -> Method {
    Method::from_bytes(method.to_uppercase().as_bytes()).unwrap()
}

#[tokio::test]
async fn every_operation_in_the_document_answers_as_documented() {
    // A developer reads /openapi.json and calls each operation in it as documented, then as a
    // careless client would: without a body's required fields, without credentials. (More wrong
    // admin tokens than --admin_failures allows a minute are sent, each must get its own answer.)
    let server = TestServer::start_with(&["--admin_failures", "1000"]).await;
    let document = fetch_document(&server).await;
    let jwt = fixture(&server).await;
    let operations = operations(&document);
    for operation in &operations {
        let (method, path, details) = operation;
        let request = valid_request(&server, &jwt, method, path).await;
        let status = send_documented(&document, operation, request).await;
        // The one success status the document gives, exactly.
        let successes: Vec<&String> = details["responses"]
            .as_object()
            .unwrap()
            .keys()
            .filter(|code| code.starts_with('2'))
            .collect();
        assert_eq!(
            successes.len(),
            1,
            "{method} {path} documents one success: {successes:?}"
        );
        assert_eq!(
            status.as_str(),
            successes[0],
            "a valid {method} {path} answered {status}"
        );

        if details.get("requestBody").is_some() {
            let url = server.endpoint(path);
            let request = server.http.request(reqwest_method(method), url);
            // Credentials as the operation takes them, so that the body is what is refused.
            let request = match uses_admin_token(details) {
                true => request.header("x-admin-token", ADMIN_TOKEN),
                false => request.bearer_auth(&jwt),
            };
            let status = send_documented(&document, operation, request.body("{}")).await;
            assert_eq!(
                status,
                StatusCode::BAD_REQUEST,
                "{method} {path} with an empty object"
            );
        }
        let secured = details["security"]
            .as_array()
            .is_some_and(|requirements| !requirements.is_empty());
        if secured {
            let url = server.endpoint(path);
            let request = server.http.request(reqwest_method(method), url).body("{}");
            let status = send_documented(&document, operation, request).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} without credentials"
            );
            let request = server
                .http
                .request(reqwest_method(method), server.endpoint(path))
                .basic_auth("reader", Some("not the password"))
                .body("{}");
            let status = send_documented(&document, operation, request).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with a wrong password"
            );
        }
    }
    // The admin calls refuse a wrong admin token as documented (create_user with a 400).
    for (method, path, details) in &operations {
        let request_body = resolve(&document, &details["requestBody"]);
        let schema = resolve(&document, &request_body["content"]["application/json"]["schema"]);
        if schema["properties"].get("admin_token").is_none() {
            continue;
        }
        let mut body = valid_body(&server, &jwt, method, path).await;
        body["admin_token"] = json!("a wrong guess");
        let request = server.http.post(server.endpoint(path)).json(&body);
        let operation = (method.clone(), path.clone(), details.clone());
        let status = send_documented(&document, &operation, request).await;
        // 401, except create_user's 400 (as the original answered).
        let documented = if path == "/create_user" {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::UNAUTHORIZED
        };
        assert_eq!(status, documented, "{method} {path} with a wrong admin token");
    }
}

/// The JSON body of `valid_request` for an admin operation.
async fn valid_body(server: &TestServer, jwt: &str, method: &str, path: &str) -> Value {
    let request = valid_request(server, jwt, method, path).await.build().unwrap();
    let bytes = request.body().and_then(|body| body.as_bytes()).unwrap();
    serde_json::from_slice(bytes).unwrap()
}

/// The path literals in the router's table of routes (the console's script, stylesheet and
/// trailing-slash alias are parts of the `/console` page, which is documented).
fn router_paths() -> Vec<String> {
    let start = ROUTER_SOURCE
        .find("static ROUTES:")
        .expect("mod.rs has the ROUTES table");
    let end = start
        + ROUTER_SOURCE[start..]
            .find("\n];\n")
            .expect("the ROUTES table ends");
    let mut paths: Vec<String> = ROUTER_SOURCE[start..end]
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|literal| literal.starts_with('/') && !literal.starts_with("/console/"))
        .map(str::to_owned)
        .collect();
    paths.sort();
    paths.dedup();
    assert!(paths.len() > 10, "router paths not found in mod.rs: {paths:?}");
    paths
}

#[tokio::test]
async fn everything_the_server_serves_is_in_the_document() {
    // A developer who finds a route in the server's router (or tries a method on it) finds that
    // route and method in the document too: the server answers nothing it does not document.
    let server = TestServer::start().await;
    let document = fetch_document(&server).await;
    let jwt = server.signup("prober", "docs").await;
    let paths = document["paths"].as_object().unwrap();
    for path in router_paths() {
        let item = paths
            .get(&path)
            .unwrap_or_else(|| panic!("the router serves {path}, which the document lacks"));
        for method in METHODS {
            let response = server
                .http
                .request(reqwest_method(method), server.endpoint(&path))
                .bearer_auth(&jwt)
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = response.status();
            let served = status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED;
            assert_eq!(
                served,
                item.get(method).is_some(),
                "{method} {path} answered {status}; the document {} it",
                if item.get(method).is_some() {
                    "lists"
                } else {
                    "does not list"
                }
            );
        }
    }
}
