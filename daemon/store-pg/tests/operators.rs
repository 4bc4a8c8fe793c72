//! The fleet's operators at the host on PostgreSQL: the site's rules for names and passwords,
//! one refusal for an unknown user, a wrong password and a disabled operator, disabling and
//! enabling, password resets, the status sites ask for, and every change in the host's audit
//! chain.

use std::sync::Arc;

use cardd_api::operators::NewOperator;
use cardd_api::{ErrorCode, Role};
use cardd_journal::clock::SystemClock;
use cardd_store_pg::{Database, OperatorError, OperatorStatus, PgAudit, PgOperators, HOST_CHAIN};

mod common;

use common::{admin, FreshDatabase};

fn new_op(username: &str, role: Role, group: Option<&str>, password: &str) -> NewOperator {
    NewOperator {
        username: username.into(),
        display_name: format!("{username} 的名字"),
        role,
        group_id: group.map(String::from),
        password: password.into(),
    }
}

fn stores(db: &FreshDatabase) -> (PgOperators, PgAudit) {
    let database = Arc::new(Database::open(&db.url).expect("database"));
    (
        PgOperators::new(database.clone(), Arc::new(SystemClock)),
        PgAudit::new(database, Arc::new(SystemClock)),
    )
}

#[test]
fn names_roles_and_passwords_follow_the_site_s_rules() {
    let db = FreshDatabase::create();
    let (ops, _) = stores(&db);
    let refused = [
        (new_op("bad name", Role::Teller, None, "secret1"), "用户名"),
        (
            new_op(&"x".repeat(33), Role::Teller, None, "secret1"),
            "用户名",
        ),
        (new_op("g1", Role::GroupOperator, None, "secret1"), "集团"),
        (new_op("t1", Role::Teller, Some("G001"), "secret1"), "集团"),
        (
            new_op("t2", Role::Teller, None, "12345"),
            "至少需要 6 个字符",
        ),
        (
            new_op("t3", Role::Teller, None, &"p".repeat(257)),
            "不能超过 256 个字符",
        ),
    ];
    for (new, says) in refused {
        let e = ops.create(&new, "test").unwrap_err();
        assert!(e.to_string().contains(says), "{}: {e}", new.username);
        assert!(e.is_refusal());
    }
    let created = ops
        .create(
            &new_op("group1", Role::GroupOperator, Some("G001"), "group-pass-1"),
            "test",
        )
        .expect("create");
    assert_eq!(
        (created.role, created.group_id.as_deref(), created.disabled),
        (Role::GroupOperator, Some("G001"), false)
    );
    assert!(created.created_at.ends_with('Z'), "{}", created.created_at);
    let e = ops
        .create(&new_op("group1", Role::Teller, None, "secret1"), "test")
        .unwrap_err();
    assert_eq!(e, OperatorError::Exists("group1".into()));
    assert_eq!(e.code(), ErrorCode::OperatorExists);
    // The hash is an argon2 PHC string and no API returns it.
    let hash = admin(
        &db.url,
        "SELECT password_hash FROM operators WHERE username = 'group1'",
    );
    assert!(hash[0].starts_with("$argon2id$"), "{hash:?}");
    assert_eq!(ops.list().expect("list"), vec![created]);
}

#[test]
fn unknown_user_wrong_password_and_disabled_operator_get_one_refusal() {
    let db = FreshDatabase::create();
    let (ops, audit) = stores(&db);
    ops.create(&new_op("alice", Role::Teller, None, "secret1"), "test")
        .expect("create");
    ops.create(&new_op("bob", Role::Auditor, None, "secret2"), "test")
        .expect("create");
    let alice = ops.verify("alice", "secret1").expect("alice logs in");
    assert_eq!(
        (alice.username.as_str(), alice.role),
        ("alice", Role::Teller)
    );

    ops.set_disabled("bob", true, "cardd-host CLI (test)")
        .expect("disable");
    let long = "x".repeat(300);
    for (user, password) in [
        ("alice", "wrong!!"),
        ("nobody", "secret1"),
        ("bob", "secret2"),
        ("", "secret1"),
        ("alice", long.as_str()),
    ] {
        let e = ops.verify(user, password).unwrap_err();
        assert_eq!(e, OperatorError::InvalidCredentials, "{user}");
        assert_eq!(e.to_string(), "用户和密码错误");
        assert_eq!(e.code(), ErrorCode::InvalidCredentials);
    }
    assert_eq!(
        ops.status(&["alice".into(), "bob".into(), "carol".into()])
            .expect("status"),
        OperatorStatus {
            disabled: vec!["bob".into()],
            gone: vec!["carol".into()],
        }
    );

    ops.set_disabled("bob", false, "cardd-host CLI (test)")
        .expect("enable");
    ops.verify("bob", "secret2").expect("enabled again");
    ops.reset_password("bob", "new-secret", "cardd-host CLI (test)")
        .expect("reset");
    assert_eq!(
        ops.verify("bob", "secret2").unwrap_err(),
        OperatorError::InvalidCredentials
    );
    ops.verify("bob", "new-secret").expect("new password");
    assert!(matches!(
        ops.reset_password("bob", "short", "test"),
        Err(OperatorError::PasswordRejected(_))
    ));
    assert_eq!(
        ops.set_disabled("nobody", true, "test").unwrap_err(),
        OperatorError::NotFound("nobody".into())
    );

    // Every change is in the host's chain, and the chain verifies.
    let actions: Vec<String> = audit
        .list(Some(HOST_CHAIN), 100)
        .expect("audit")
        .into_iter()
        .map(|r| format!("{} {}", r.action, r.target.unwrap_or_default()))
        .collect();
    for expected in [
        "operators.create alice",
        "operators.create bob",
        "operators.disable bob",
        "operators.enable bob",
        "operators.reset_password bob",
    ] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected}: {actions:?}"
        );
    }
    assert_eq!(actions.len(), 5, "refusals change nothing: {actions:?}");
    assert!(
        audit
            .list(Some(HOST_CHAIN), 100)
            .unwrap()
            .iter()
            .all(|r| !r.detail.contains("secret")),
        "no password in the log"
    );
    let report = audit.verify().expect("the chain verifies");
    assert_eq!((report.chains, report.records), (1, 5));
}
