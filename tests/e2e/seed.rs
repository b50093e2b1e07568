//! `scripts/directus-seed.mjs --production` on an instance that already has users (this one: seeded for the
//! tests, with demo users and an admin token): it creates no user, leaves the admin's token and the ledgers
//! alone, and keeps the sidecar's token unless asked to rotate it.

use serde_json::{Value, json};
use tokio::process::Command;

use crate::harness::{Instance, serial};

async fn production_seed(instance: &Instance, extra: &[&str]) -> (bool, String, String) {
    let output = Command::new("node")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/directus-seed.mjs"))
        .arg("--production")
        .args(extra)
        .env("DIRECTUS_URL", instance.var("DIRECTUS_URL"))
        .env("DIRECTUS_ADMIN_EMAIL", instance.var("DIRECTUS_ADMIN_EMAIL"))
        .env("DIRECTUS_ADMIN_PASSWORD", instance.var("DIRECTUS_ADMIN_PASSWORD"))
        .env_remove("SEED_SERVICE_TOKEN")
        .env_remove("SEED_ADMIN_TOKEN")
        .output()
        .await
        .unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.success(), text(&output.stdout), text(&output.stderr))
}

async fn count(instance: &Instance, http: &reqwest::Client, path: &str) -> u64 {
    let data = instance.admin_get(http, path, &[("aggregate[count]", "*")]).await;
    let count = &data[0]["count"];
    count.as_u64().or_else(|| count.as_str().and_then(|s| s.parse().ok())).unwrap_or_else(|| panic!("{data}"))
}

async fn token_works(instance: &Instance, http: &reqwest::Client, token: &str) -> bool {
    let response = http.get(instance.directus("/users/me")).bearer_auth(token).send().await.unwrap();
    response.status() == 200
}

#[tokio::test]
async fn the_production_seed_creates_no_user_and_leaves_the_admin_and_the_sidecar_token_alone() {
    let _serial = serial().await;
    let instance = Instance::from_env();
    let http = crate::harness::client();
    let users_before = count(&instance, &http, "/users").await;
    let ledger_before = count(&instance, &http, "/items/credit_transactions").await;

    let (ok, stdout, stderr) = production_seed(&instance, &[]).await;
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "", "the service user exists: no token printed again");
    assert!(stderr.contains("token was left as it is"), "{stderr}");
    assert_eq!(count(&instance, &http, "/users").await, users_before, "no demo user");
    assert_eq!(count(&instance, &http, "/items/credit_transactions").await, ledger_before, "no ledger row");
    assert!(token_works(&instance, &http, instance.var("DIRECTUS_ADMIN_TOKEN")).await, "the admin's token");
    assert!(token_works(&instance, &http, instance.var("DIRECTUS_TOKEN")).await, "the sidecar's token");

    // Asked to, it issues the sidecar a new token, printed once; the old one stops working.
    let (ok, stdout, stderr) = production_seed(&instance, &["--rotate-service-token"]).await;
    assert!(ok, "{stderr}");
    let fresh = stdout.trim().strip_prefix("DIRECTUS_TOKEN=").unwrap_or_else(|| panic!("{stdout}")).to_owned();
    assert!(token_works(&instance, &http, &fresh).await);
    assert!(!token_works(&instance, &http, instance.var("DIRECTUS_TOKEN")).await);
    assert!(!stderr.contains(&fresh), "the token is on stdout only");

    // Give the other tests their token back.
    let me: Value = http
        .get(instance.directus("/users/me?fields=id"))
        .bearer_auth(&fresh)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let response = http
        .patch(instance.directus(&format!("/users/{}", me["data"]["id"].as_str().unwrap())))
        .bearer_auth(instance.var("DIRECTUS_ADMIN_TOKEN"))
        .json(&json!({"token": instance.var("DIRECTUS_TOKEN")}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(token_works(&instance, &http, instance.var("DIRECTUS_TOKEN")).await);
}

/// Installing the schema into a Directus that has collections of its own never deletes them (Directus's diff
/// lists everything the snapshot does not as a deletion; the apply script drops those).
#[tokio::test]
async fn applying_the_schema_to_an_existing_install_leaves_its_own_collections_alone() {
    let _serial = serial().await;
    let instance = Instance::from_env();
    let http = crate::harness::client();
    let name = format!("customer_notes_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let response = http
        .post(instance.directus("/collections"))
        .bearer_auth(instance.var("DIRECTUS_ADMIN_TOKEN"))
        .json(&json!({"collection": name, "schema": {}, "meta": {},
                      "fields": [{"field": "id", "type": "integer", "schema": {"is_primary_key": true, "has_auto_increment": true}},
                                 {"field": "body", "type": "text"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());

    let output = Command::new("node")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/directus-apply-schema.mjs"))
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/directus-schema/snapshot.yaml"))
        .env("DIRECTUS_URL", instance.var("DIRECTUS_URL"))
        .env("DIRECTUS_ADMIN_TOKEN", instance.var("DIRECTUS_ADMIN_TOKEN"))
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("left alone"), "{stderr}");
    let still_there = http
        .get(instance.directus(&format!("/collections/{name}")))
        .bearer_auth(instance.var("DIRECTUS_ADMIN_TOKEN"))
        .send()
        .await
        .unwrap();
    assert_eq!(still_there.status(), 200, "the install's own collection survives");
    http.delete(instance.directus(&format!("/collections/{name}")))
        .bearer_auth(instance.var("DIRECTUS_ADMIN_TOKEN"))
        .send()
        .await
        .unwrap();
}

/// The seed's Insights dashboard: there once, and every panel points at fields that exist (the query each
/// panel runs is answered by Directus, with data).
#[tokio::test]
async fn the_seeded_insights_dashboard_has_its_panels_on_real_fields() {
    let _serial = serial().await;
    let instance = Instance::from_env();
    let http = crate::harness::client();
    let dashboards = instance.admin_get(&http, "/dashboards", &[("filter[name][_eq]", "byok-bridge")]).await;
    assert_eq!(dashboards.as_array().unwrap().len(), 1, "{dashboards}");
    let id = dashboards[0]["id"].as_str().unwrap();
    let panels = instance.admin_get(&http, "/panels", &[("filter[dashboard][_eq]", id), ("limit", "-1")]).await;
    let panels = panels.as_array().unwrap();
    assert_eq!(panels.len(), 6);
    let (ops, data): (Vec<&Value>, Vec<&Value>) = panels.iter().partition(|p| p["type"] == "byok-bridge-ops");
    assert_eq!(ops.len(), 1, "the operations panel");
    for panel in data {
        let options = &panel["options"];
        let collection = options["collection"].as_str().unwrap();
        let fields: Vec<&str> = ["dateField", "valueField", "field", "column", "groupByField", "aggregateField"]
            .iter()
            .filter_map(|key| options[*key].as_str())
            .collect();
        assert!(!fields.is_empty(), "{panel}");
        let data = instance
            .admin_get(&http, &format!("/items/{collection}"), &[("fields", &fields.join(",")), ("limit", "1")])
            .await;
        assert!(data.is_array(), "{}: {data}", panel["name"]);
    }
    // The seed ran on a ledger with signup grants, so the credit panels have rows to show.
    let grants = instance.admin_get(&http, "/items/credit_transactions", &[("limit", "1")]).await;
    assert_eq!(grants.as_array().unwrap().len(), 1);
}
