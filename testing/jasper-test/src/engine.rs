//! Seeded data for tests and benches that drive engines in-process.

use jasper_engine::{Engine, IdentityInfo};

/// Gives `a` and `b` fresh identities and makes each the other's contact, named `a_name` on
/// `b` and `b_name` on `a`: the start of nearly every exchange test.
pub async fn befriend(
    a: &Engine,
    a_name: &str,
    b: &Engine,
    b_name: &str,
) -> (IdentityInfo, IdentityInfo) {
    let a_id = a.identity().create().await.expect("identity");
    let b_id = b.identity().create().await.expect("identity");
    a.contacts()
        .add(&b_id.public_key, b_name, None)
        .await
        .expect("contact");
    b.contacts()
        .add(&a_id.public_key, a_name, None)
        .await
        .expect("contact");
    (a_id, b_id)
}
