//! `/resources/{kind}` with the shipped `notes.rhai`: document shape, what owners, other users
//! and admins may do, listing and paging, unknown kinds and ids, and malformed or oversized
//! bodies.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

/// Asserts a document as the API shows it and returns its id.
fn assert_doc(v: &Value, owner: &str, data: &Value) -> String {
    let obj = v.as_object().unwrap_or_else(|| panic!("not an object: {v}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["created_at", "data", "id", "kind", "owner", "updated_at"], "{v}");
    assert_eq!(v["kind"], "notes", "{v}");
    assert_eq!(v["owner"], owner, "{v}");
    assert_eq!(&v["data"], data, "{v}");
    for k in ["created_at", "updated_at"] {
        let t = v[k].as_str().unwrap_or_else(|| panic!("{k} is not a string: {v}"));
        assert!(
            t.len() >= 20 && t.as_bytes()[4] == b'-' && t.contains('T'),
            "{k} is not RFC 3339: {v}"
        );
    }
    let id = v["id"].as_str().unwrap_or_else(|| panic!("id is not a string: {v}"));
    assert!(!id.is_empty(), "{v}");
    id.to_owned()
}

fn create(s: &TestServer, token: &str, data: Value) -> String {
    let r = s.post("/resources/notes", token, data.clone());
    assert_eq!(r.status, 201, "{r:?}");
    let v = r.json();
    let owner = v["owner"].as_str().unwrap_or_default().to_owned();
    assert_doc(&v, &owner, &data)
}

/// Ids of the items of a listing page.
fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {page}"))
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Lists everything `token` may read by following `next` with page size `limit`.
fn list_all(s: &TestServer, token: &str, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut path = format!("/resources/notes?limit={limit}");
    for _ in 0..100 {
        let r = s.get(&path, token);
        assert_eq!(r.status, 200, "{path}: {r:?}");
        let page = r.json();
        let got = ids(&page);
        assert!(got.len() <= limit, "page larger than limit {limit}: {r:?}");
        out.extend(got);
        match &page["next"] {
            Value::Null => return out,
            Value::String(next) => path = format!("/resources/notes?limit={limit}&after={}", urlencode(next)),
            other => panic!("`next` is neither null nor a string: {other}"),
        }
    }
    panic!("`next` never became null");
}

fn auth_header(token: &str) -> String {
    format!("Bearer {token}")
}

/// Create gives 201 `{id, kind, owner, data, created_at, updated_at}` with the caller as owner;
/// owners read, update (data replaced) and delete (204, then 404) their notes; others get 403
/// unless the note is public; admins read everything; listings show only readable notes.
#[test]
fn notes_follow_the_shipped_policy() {
    let s = TestServer::start();
    let admin = s.admin_token();
    let ann = s.user(&admin, "ann", &["user"]);
    let bob = s.user(&admin, "bob", &["user"]);

    let data = json!({"title": "groceries", "items": ["milk", "eggs"], "n": 2, "nested": {"a": null}});
    let r = s.post("/resources/notes", &ann, data.clone());
    assert_eq!(r.status, 201, "{r:?}");
    assert!(r.content_type().starts_with("application/json"), "{r:?}");
    let private = assert_doc(&r.json(), "ann", &data);
    let created = r.json();
    let public_data = json!({"title": "hello world", "public": true});
    let r = s.post("/resources/notes", &ann, public_data.clone());
    assert_eq!(r.status, 201, "{r:?}");
    let public = assert_doc(&r.json(), "ann", &public_data);
    assert_ne!(private, public, "ids are unique");
    let bobs = create(&s, &bob, json!({"title": "bob's"}));
    let r = s.get(&format!("/resources/notes/{bobs}"), &bob);
    assert_eq!(r.json()["owner"], "bob", "{r:?}");

    // Read own.
    let r = s.get(&format!("/resources/notes/{private}"), &ann);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json(), created, "reading gives what create answered");

    // Read other's private: 403 with a reason; public: 200.
    let r = s.get(&format!("/resources/notes/{private}"), &bob);
    let p = r.assert_problem(403);
    assert!(p["detail"].as_str().is_some_and(|d| !d.is_empty()), "{r:?}");
    assert!(!r.body.contains("groceries"), "a denied read leaks nothing: {r:?}");
    let r = s.get(&format!("/resources/notes/{public}"), &bob);
    assert_eq!(r.status, 200, "{r:?}");
    assert_doc(&r.json(), "ann", &public_data);

    // Admin reads all.
    for id in [&private, &public, &bobs] {
        let r = s.get(&format!("/resources/notes/{id}"), &admin);
        assert_eq!(r.status, 200, "{r:?}");
    }

    // Listings: only readable notes, in creation order.
    assert_eq!(list_all(&s, &ann, 100), [private.clone(), public.clone()]);
    assert_eq!(list_all(&s, &bob, 100), [public.clone(), bobs.clone()]);
    assert_eq!(
        list_all(&s, &admin, 100),
        [private.clone(), public.clone(), bobs.clone()]
    );
    let r = s.get("/resources/notes", &bob);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["next"], Value::Null, "{r:?}");
    assert!(!r.body.contains("groceries"), "{r:?}");

    // Update by another user: 403 with the policy's reason; nothing changed.
    let r = s.req(
        "PUT",
        &format!("/resources/notes/{private}"),
        Some(&bob),
        Some(&json!({"title": "pwned"})),
    );
    let p = r.assert_problem(403);
    assert!(
        p["detail"].as_str().is_some_and(|d| d.contains("only the owner")),
        "{r:?}"
    );
    let r = s.req(
        "PUT",
        &format!("/resources/notes/{public}"),
        Some(&bob),
        Some(&json!({"title": "pwned"})),
    );
    r.assert_problem(403);
    assert_eq!(s.get(&format!("/resources/notes/{private}"), &ann).json()["data"], data);

    // Update by the owner: 200, data replaced (not merged), owner and created_at kept.
    let new_data = json!({"title": "groceries v2"});
    let r = s.req(
        "PUT",
        &format!("/resources/notes/{private}"),
        Some(&ann),
        Some(&new_data),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let v = r.json();
    assert_eq!(assert_doc(&v, "ann", &new_data), private);
    assert_eq!(v["created_at"], created["created_at"], "{v}");
    assert!(
        v["updated_at"].as_str() >= created["updated_at"].as_str(),
        "updated_at does not go back: {v}"
    );
    let r = s.get(&format!("/resources/notes/{private}"), &ann);
    assert_eq!(r.json()["data"], new_data, "{r:?}");

    // Delete by another user: 403; by the owner: 204, then 404.
    s.req("DELETE", &format!("/resources/notes/{private}"), Some(&bob), None)
        .assert_problem(403);
    let r = s.req("DELETE", &format!("/resources/notes/{private}"), Some(&ann), None);
    assert_eq!(r.status, 204, "{r:?}");
    assert!(r.body.is_empty(), "{r:?}");
    s.get(&format!("/resources/notes/{private}"), &ann).assert_problem(404);
    s.get(&format!("/resources/notes/{private}"), &admin)
        .assert_problem(404);
    s.req("DELETE", &format!("/resources/notes/{private}"), Some(&ann), None)
        .assert_problem(404);
    s.req(
        "PUT",
        &format!("/resources/notes/{private}"),
        Some(&ann),
        Some(&new_data),
    )
    .assert_problem(404);
    assert_eq!(list_all(&s, &admin, 100), [public.clone(), bobs.clone()]);

    // Admin may change and delete anyone's note.
    let r = s.req(
        "PUT",
        &format!("/resources/notes/{bobs}"),
        Some(&admin),
        Some(&json!({"title": "x"})),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json()["owner"],
        "bob",
        "an update by someone else keeps the owner: {r:?}"
    );
    assert_eq!(
        s.req("DELETE", &format!("/resources/notes/{bobs}"), Some(&admin), None)
            .status,
        204
    );
}

/// The shipped policy refuses a note without a string `title`, with its reason in `detail`,
/// on create and on update.
#[test]
fn note_without_string_title_is_denied_with_reason() {
    let s = TestServer::start();
    let admin = s.admin_token();
    let ann = s.user(&admin, "ann", &["user"]);
    for data in [
        json!({}),
        json!({"title": 5}),
        json!({"title": null}),
        json!({"titel": "typo"}),
    ] {
        let r = s.post("/resources/notes", &ann, data.clone());
        let p = r.assert_problem(403);
        let detail = p["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("title"),
            "{data}: the 403 carries the policy's reason: {r:?}"
        );
    }
    let id = create(&s, &ann, json!({"title": "ok"}));
    let r = s.req(
        "PUT",
        &format!("/resources/notes/{id}"),
        Some(&ann),
        Some(&json!({"body": "no title"})),
    );
    let p = r.assert_problem(403);
    assert!(p["detail"].as_str().unwrap_or_default().contains("title"), "{r:?}");
    assert_eq!(
        s.get(&format!("/resources/notes/{id}"), &ann).json()["data"],
        json!({"title": "ok"})
    );
    assert_eq!(list_all(&s, &admin, 100), [id], "denied creates stored nothing");
}

/// Unknown kinds, invalid kind names (including system policies and path tricks) and unknown
/// ids are 404 problem+json, for every method.
#[test]
fn unknown_kinds_and_ids_are_404() {
    let s = TestServer::start();
    let admin = s.admin_token();
    let id = create(&s, &admin, json!({"title": "t"}));
    for kind in [
        "nope",
        "Notes",
        "NOTES",
        "..%2Fx",
        "%2E%2E%2Fx",
        "_users",
        "_policies",
        "notes.rhai",
        "n%20otes",
    ] {
        let base = format!("/resources/{kind}");
        s.get(&base, &admin).assert_problem(404);
        s.post(&base, &admin, json!({"title": "t"})).assert_problem(404);
        s.get(&format!("{base}/{id}"), &admin).assert_problem(404);
        s.req(
            "PUT",
            &format!("{base}/{id}"),
            Some(&admin),
            Some(&json!({"title": "t"})),
        )
        .assert_problem(404);
        s.req("DELETE", &format!("{base}/{id}"), Some(&admin), None)
            .assert_problem(404);
    }
    let long_kind = format!("/resources/{}", "a".repeat(65));
    s.get(&long_kind, &admin).assert_problem(404);
    for bad in [
        "0000000000000000",
        "does-not-exist",
        "%2E%2E",
        "a%20b",
        &"x".repeat(300),
    ] {
        let path = format!("/resources/notes/{bad}");
        s.get(&path, &admin).assert_problem(404);
        s.req("PUT", &path, Some(&admin), Some(&json!({"title": "t"})))
            .assert_problem(404);
        s.req("DELETE", &path, Some(&admin), None).assert_problem(404);
    }
    // The one real note is untouched.
    assert_eq!(s.get(&format!("/resources/notes/{id}"), &admin).status, 200);
}

/// A body that is not a JSON object (array, string, number, null, invalid JSON, empty) is 400
/// problem+json; a non-JSON content type is 415 or 400 problem+json.
#[test]
fn bodies_that_are_not_json_objects_are_refused() {
    let s = TestServer::start();
    let admin = s.admin_token();
    let auth = auth_header(&admin);
    let id = create(&s, &admin, json!({"title": "t"}));
    let item = format!("/resources/notes/{id}");
    let bodies: [&[u8]; 9] = [
        b"[1,2]",
        b"\"a string\"",
        b"42",
        b"null",
        b"true",
        b"{\"title\": ",
        b"{'title': 'x'}",
        b"not json",
        b"",
    ];
    for body in bodies {
        let shown = String::from_utf8_lossy(body);
        for (method, path) in [("POST", "/resources/notes"), ("PUT", item.as_str())] {
            let r = s.raw(
                method,
                path,
                &[("Authorization", &auth)],
                Some(("application/json", body)),
            );
            assert_eq!(r.status, 400, "{method} {shown:?}: {r:?}");
            r.assert_problem(400);
        }
    }
    for (method, path) in [("POST", "/resources/notes"), ("PUT", item.as_str())] {
        let r = s.raw(method, path, &[("Authorization", &auth)], None);
        assert!(r.status == 400 || r.status == 415, "{method} without a body: {r:?}");
        r.assert_problem(r.status);
        for ctype in ["text/plain", "application/x-www-form-urlencoded"] {
            let r = s.raw(
                method,
                path,
                &[("Authorization", &auth)],
                Some((ctype, br#"{"title":"x"}"#)),
            );
            assert!(r.status == 415 || r.status == 400, "{method} {ctype}: {r:?}");
            r.assert_problem(r.status);
        }
    }
    // Nesting beyond what the parser accepts is a 400, not a crash.
    let deep = format!("{{\"title\":\"x\",\"d\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000));
    let r = s.raw(
        "POST",
        "/resources/notes",
        &[("Authorization", &auth)],
        Some(("application/json", deep.as_bytes())),
    );
    r.assert_problem(400);
    assert_eq!(s.raw("GET", "/healthz", &[], None).status, 200);

    assert_eq!(s.get(&item, &admin).json()["data"], json!({"title": "t"}));
    assert_eq!(list_all(&s, &admin, 100), [id]);
}

/// With `GATEHOUSE_MAX_BODY_BYTES=2048`, a larger body is refused with 413 problem+json, with a
/// `Content-Length` and chunked; a body under the limit still works.
#[test]
fn body_over_the_limit_is_413() {
    let s = TestServer::start_with(Some(&shipped_policies()), &[("GATEHOUSE_MAX_BODY_BYTES", "2048")]);
    let admin = s.admin_token();
    let auth = auth_header(&admin);

    let small = json!({"title": "x".repeat(1500)});
    let id = create(&s, &admin, small);
    let item = format!("/resources/notes/{id}");

    let big = json!({"title": "x".repeat(4096)}).to_string();
    for (method, path) in [("POST", "/resources/notes"), ("PUT", item.as_str())] {
        let r = s.raw(
            method,
            path,
            &[("Authorization", &auth)],
            Some(("application/json", big.as_bytes())),
        );
        r.assert_problem(413);
    }

    // Chunked: no Content-Length, so the server can only find out by reading.
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
    for (method, path) in [("POST", "/resources/notes"), ("PUT", item.as_str())] {
        let result = agent
            .request(method, &s.url(path))
            .set("Authorization", &auth)
            .set("Content-Type", "application/json")
            .send(big.as_bytes());
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("chunked {method}: {e}"),
        };
        let status = resp.status();
        let ctype = resp.header("content-type").unwrap_or_default().to_owned();
        let body = resp.into_string().unwrap_or_default();
        assert_eq!(status, 413, "chunked {method}: {body}");
        assert!(
            ctype.starts_with("application/problem+json"),
            "chunked {method}: {ctype} {body}"
        );
        let p: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        assert_eq!(p["status"], 413, "{body}");
    }
    // A small chunked body is fine.
    let small = json!({"title": "chunked"}).to_string();
    let r = agent
        .post(&s.url("/resources/notes"))
        .set("Authorization", &auth)
        .set("Content-Type", "application/json")
        .send(small.as_bytes());
    assert_eq!(r.map(|r| r.status()).unwrap_or_else(|e| panic!("{e}")), 201);

    assert_eq!(list_all(&s, &admin, 100).len(), 2, "refused bodies stored nothing");
}

/// Seven notes listed three at a time by following `next` until null come back exactly once
/// each, in creation order; a user whose policy hides them all sees none; bad `limit` and
/// `after` are 400.
#[test]
fn paging_follows_next_in_creation_order() {
    let s = TestServer::start();
    let admin = s.admin_token();
    let ann = s.user(&admin, "ann", &["user"]);
    let bob = s.user(&admin, "bob", &["user"]);
    let created: Vec<String> = (0..7)
        .map(|i| create(&s, &ann, json!({"title": format!("n{i}")})))
        .collect();

    let r = s.get("/resources/notes?limit=3", &ann);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(ids(&r.json()), created[..3], "{r:?}");
    assert!(r.json()["next"].is_string(), "{r:?}");

    for limit in [1, 3, 7, 1000] {
        assert_eq!(list_all(&s, &ann, limit), created, "limit={limit}");
        assert_eq!(list_all(&s, &admin, limit), created, "admin, limit={limit}");
    }
    assert_eq!(list_all(&s, &ann, 100), created, "default limit");
    assert!(list_all(&s, &bob, 3).is_empty(), "bob may read none of ann's notes");

    // The cursor keeps working when the document it names is deleted meanwhile.
    let r = s.get("/resources/notes?limit=3", &ann);
    let next = r.json()["next"].as_str().unwrap_or_else(|| panic!("{r:?}")).to_owned();
    assert_eq!(
        s.req("DELETE", &format!("/resources/notes/{}", created[2]), Some(&ann), None)
            .status,
        204
    );
    let r = s.get(&format!("/resources/notes?limit=10&after={}", urlencode(&next)), &ann);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(ids(&r.json()), created[3..], "{r:?}");
    assert_eq!(r.json()["next"], Value::Null, "{r:?}");

    for q in [
        "limit=0",
        "limit=1001",
        "limit=-1",
        "limit=abc",
        "after=not%20a%20cursor",
        "after=%2F%2F",
        "after=a.b",
    ] {
        let r = s.get(&format!("/resources/notes?{q}"), &ann);
        assert_eq!(r.status, 400, "{q}: {r:?}");
        r.assert_problem(400);
    }
}

/// Regression: 20 concurrent PUTs of one document, after ten 1 MB documents were stored, all get
/// an answer (200 or 409) and the server keeps accepting writes. sled's `flush_async` used to
/// stall the write path for good under this load.
#[test]
fn concurrent_writes_never_hang() {
    let s = std::sync::Arc::new(TestServer::start());
    let admin = s.admin_token();
    let big = "x".repeat(1_000_000);
    for _ in 0..10 {
        let r = s.post("/resources/notes", &admin, json!({"title": "big", "body": big}));
        assert_eq!(r.status, 201, "{r:?}");
    }
    let r = s.post("/resources/notes", &admin, json!({"title": "race"}));
    let id = r.json()["id"].as_str().unwrap().to_owned();
    for _round in 0..3 {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let (s, admin, id) = (s.clone(), admin.clone(), id.clone());
                std::thread::spawn(move || {
                    let body = json!({"title": "race", "n": i});
                    s.req("PUT", &format!("/resources/notes/{id}"), Some(&admin), Some(&body))
                        .status
                })
            })
            .collect();
        for h in handles {
            let status = h.join().unwrap();
            assert!(status == 200 || status == 409, "status {status}");
        }
    }
    let r = s.post("/resources/notes", &admin, json!({"title": "after"}));
    assert_eq!(r.status, 201, "{r:?}");
}
