//! `/openapi.json` describes what the server serves: every documented operation answers
//! (no unknown route, no wrong method), and the document is OpenAPI 3.1.

use serde_json::Value;

use crate::support::*;

#[tokio::test]
async fn every_documented_operation_is_served() {
    let server = TestServer::start().await;
    let response = server.http.get(format!("{}/openapi.json", server.base)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let doc: Value = response.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    // The served contract is the committed one (see casefile-server's snapshot test).
    let committed = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json")).unwrap();
    assert_eq!(doc, serde_json::from_slice::<Value>(&committed).unwrap(), "docs/openapi.json is what is served");
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");

    let machine = server.seed_machine("documented.example").await;
    let token = server.token(ALL);
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path.replace(
            "{id}",
            if path.starts_with("/api/machines/") { &machine } else { "7b1f4967-d972-4e5a-a3c0-6a9e617a22a4" },
        );
        for method in item.as_object().unwrap().keys() {
            operations += 1;
            let op = &item[method];
            if path.starts_with("/api/") {
                assert!(op["responses"]["429"].is_object(), "{method} {path} documents throttling");
                assert!(op["security"].is_array(), "{method} {path} needs a token");
            }
            let request = match method.as_str() {
                "get" => server.http.get(format!("{}{concrete}", server.base)),
                "post" => {
                    server.http.post(format!("{}{concrete}", server.base)).json(&serde_json::json!({"Comment": "doc"}))
                }
                "put" => server.http.put(format!("{}{concrete}", server.base)).json(&serde_json::json!({})),
                "delete" => server.http.delete(format!("{}{concrete}", server.base)),
                other => panic!("unexpected method {other}"),
            };
            let response = request.bearer_auth(&token).send().await.unwrap();
            let status = response.status().as_u16();
            assert_ne!(status, 405, "{method} {path}");
            if status == 404 {
                let (_, error) = error_of(response).await;
                assert_ne!(error["code"], "NotFound", "{method} {path} is routed");
            }
        }
    }
    assert_eq!(
        operations, 36,
        "the public operations, the admin API (with users and enrollment tokens), the download and JWKS"
    );
}
