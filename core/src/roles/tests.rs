use super::file::{self, Declared, Kind};
use super::*;

fn state(login: bool) -> RoleState {
    RoleState {
        flags: Flag::ALL
            .iter()
            .map(|flag| (*flag, matches!(flag, Flag::Inherit) || (*flag == Flag::Login && login)))
            .collect(),
        connection_limit: -1,
        valid_until: None,
        password: None,
        member_of: vec![],
        comment: None,
    }
}

#[test]
fn a_new_role_gets_one_create_with_a_scram_secret_then_its_grants_and_comment() {
    let spec = RoleSpec {
        in_roles: Some(vec!["readers".into()]),
        comment: Some("app's role".into()),
        valid_until: Some(Timestamp::parse("2030-01-01T00:00:00Z").unwrap()),
        ..RoleSpec::new("App")
    };
    let plan = plan_role(&spec, Some("hunter2"), None, &[]).unwrap();
    assert_eq!(plan.outcome, Outcome::Created);
    assert_eq!(plan.statements.len(), 3);
    let create = &plan.statements[0];
    assert!(create.starts_with("CREATE ROLE \"App\" WITH LOGIN CONNECTION LIMIT -1 VALID UNTIL '2030-01-01T00:00:00.000000Z' PASSWORD 'SCRAM-SHA-256$4096:"), "{create}");
    assert!(!plan.statements.iter().any(|s| s.contains("hunter2")));
    assert_eq!(plan.statements[1], "GRANT \"readers\" TO \"App\"");
    assert_eq!(plan.statements[2], "COMMENT ON ROLE \"App\" IS 'app''s role'");
}

#[test]
fn an_identical_role_is_unchanged_and_each_difference_is_one_option() {
    let mut current = state(true);
    current.password = Some(scram::secret("pw"));
    let spec = RoleSpec::new("app");
    let plan = plan_role(&spec, Some("pw"), Some(&current), &[]).unwrap();
    assert_eq!((plan.outcome, plan.statements.len()), (Outcome::Unchanged, 0));

    let mut spec = RoleSpec::new("app");
    spec.flags.insert(Flag::Createdb, true);
    spec.flags.insert(Flag::Login, false);
    spec.connection_limit = 5;
    let plan = plan_role(&spec, Some("new"), Some(&current), &[]).unwrap();
    assert_eq!(plan.outcome, Outcome::Updated);
    assert_eq!(plan.changes, ["login", "createdb", "connection_limit", "password"]);
    assert!(
        plan.statements[0].starts_with("ALTER ROLE \"app\" WITH NOLOGIN CREATEDB CONNECTION LIMIT 5 PASSWORD 'SCRAM")
    );
}

#[test]
fn on_create_keeps_a_rotated_password_but_upgrades_a_matching_md5_hash() {
    let mut current = state(true);
    current.password = Some(scram::secret("rotated"));
    let spec = RoleSpec { password_update: PasswordUpdate::OnCreate, ..RoleSpec::new("app") };
    assert_eq!(plan_role(&spec, Some("bootstrap"), Some(&current), &[]).unwrap().outcome, Outcome::Unchanged);
    let always = RoleSpec::new("app");
    assert_eq!(plan_role(&always, Some("bootstrap"), Some(&current), &[]).unwrap().changes, ["password"]);

    current.password = Some("md581ad3d00fcdf98fbc5f8f9a859590b46".into()); // md5('pw' || 'app')
    let plan = plan_role(&spec, Some("pw"), Some(&current), &[]).unwrap();
    assert_eq!(plan.changes, ["password (MD5 hash upgraded to SCRAM-SHA-256)"]);
}

#[test]
fn memberships_are_made_exact_and_comments_removed_with_an_empty_one() {
    let mut current = state(true);
    current.member_of = vec!["old".into(), "kept".into()];
    current.comment = Some("before".into());
    let spec = RoleSpec {
        in_roles: Some(vec!["kept".into(), "new".into()]),
        comment: Some(String::new()),
        ..RoleSpec::new("app")
    };
    let plan = plan_role(&spec, None, Some(&current), &[]).unwrap();
    assert_eq!(
        plan.statements,
        ["GRANT \"new\" TO \"app\"", "REVOKE \"old\" FROM \"app\"", "COMMENT ON ROLE \"app\" IS NULL"]
    );
    // Not declared: not managed.
    let plan = plan_role(&RoleSpec::new("app"), None, Some(&current), &[]).unwrap();
    assert_eq!(plan.outcome, Outcome::Unchanged);
}

#[test]
fn absent_drops_once() {
    let spec = RoleSpec { ensure: Ensure::Absent, ..RoleSpec::new("app") };
    assert_eq!(plan_role(&spec, None, Some(&state(true)), &[]).unwrap().statements, ["DROP ROLE \"app\""]);
    assert_eq!(plan_role(&spec, None, None, &[]).unwrap().outcome, Outcome::Unchanged);
}

#[test]
fn reserved_long_and_empty_names_and_empty_passwords_are_refused() {
    let reserved = ["postgres".to_string()];
    for name in ["pg_monitor", "public", "none", "postgres", "", &"x".repeat(64)] {
        let refused = plan_role(&RoleSpec::new(name), None, None, &reserved).unwrap_err();
        assert!(refused.message.contains("name"), "{name}: {refused}");
    }
    assert_eq!(plan_role(&RoleSpec::new("pg_monitor"), None, None, &[]).unwrap_err().kind, RefusalKind::Reserved);
    assert!(plan_role(&RoleSpec::new("app"), Some(""), None, &[]).unwrap_err().message.contains("empty password"));
    // 63 bytes of multibyte characters is still fine.
    assert!(plan_role(&RoleSpec::new("é".repeat(31)), None, None, &[]).is_ok());
}

#[test]
fn timestamps_round_trip_through_postgres_literals() {
    let t = Timestamp::parse("2030-06-01T12:30:00+02:00").unwrap();
    assert_eq!(t.literal(), "'2030-06-01T10:30:00.000000Z'");
    assert_eq!(Timestamp::parse("2000-01-01T00:00:01Z").unwrap(), Timestamp(1_000_000));
    assert_eq!(Timestamp::parse("infinity").unwrap().literal(), "'infinity'");
    assert!(Timestamp::parse("next tuesday").unwrap_err().hint.contains("RFC 3339"));
}

#[test]
fn databases_are_created_top_level_and_owners_changed_in_place() {
    let spec = DatabaseSpec {
        name: "git tea".into(),
        owner: Some("gitea".into()),
        template: Some("template0".into()),
        encoding: Some("UTF8".into()),
        locale: Some("C.UTF-8".into()),
        ..DatabaseSpec::default()
    };
    let plan = plan_database(&spec, None, &[]).unwrap();
    assert_eq!(
        plan.statement.as_deref(),
        Some("CREATE DATABASE \"git tea\" OWNER \"gitea\" TEMPLATE \"template0\" ENCODING 'UTF8' LOCALE 'C.UTF-8'")
    );
    assert!(plan.top_level);
    let current = DatabaseState {
        owner: "postgres".into(),
        encoding: "UTF8".into(),
        collate: "C.UTF-8".into(),
        ctype: "C.UTF-8".into(),
    };
    let plan = plan_database(&spec, Some(&current), &[]).unwrap();
    assert_eq!(plan.statement.as_deref(), Some("ALTER DATABASE \"git tea\" OWNER TO \"gitea\""));
    assert!(!plan.top_level);
    let owned = DatabaseState { owner: "gitea".into(), ..current.clone() };
    assert_eq!(plan_database(&spec, Some(&owned), &[]).unwrap().outcome, Outcome::Unchanged);
    let latin = DatabaseState { encoding: "LATIN1".into(), ..owned };
    assert_eq!(plan_database(&spec, Some(&latin), &[]).unwrap_err().kind, RefusalKind::Conflict);
}

#[test]
fn databases_are_dropped_top_level_except_templates_and_the_current_one() {
    let spec = |name: &str| DatabaseSpec { name: name.into(), ensure: Ensure::Absent, ..DatabaseSpec::default() };
    let exists = DatabaseState { owner: "o".into(), encoding: "UTF8".into(), collate: "C".into(), ctype: "C".into() };
    let plan = plan_database(&spec("old"), Some(&exists), &["postgres".into()]).unwrap();
    assert_eq!((plan.outcome, plan.top_level), (Outcome::Dropped, true));
    for name in ["template1", "postgres"] {
        assert!(plan_database(&spec(name), Some(&exists), &["postgres".into()]).is_err(), "{name}");
    }
    assert_eq!(plan_database(&spec("gone"), None, &[]).unwrap().outcome, Outcome::Unchanged);
}

#[test]
fn the_roles_file_is_ordered_by_dependencies_and_bad_entries_fail_alone() {
    let entries = file::parse(
        r#"{
          "roles": [
            {"name": "app", "password_file": "/run/secrets/app", "in_roles": ["readers"]},
            {"name": "readers", "login": false},
            {"name": "typo", "logn": false},
            {"name": "plain", "password": "secret"},
            {"name": "app"},
            {"name": "a", "in_roles": ["b"]},
            {"name": "b", "in_roles": ["a"]}
          ],
          "databases": [{"name": "app", "owner": "app"}, {"name": "bad", "ensure": "gone"}]
        }"#,
    )
    .unwrap();
    let names: Vec<(Kind, &str, bool)> =
        entries.iter().map(|e| (e.kind, e.name.as_str(), e.declared.is_ok())).collect();
    assert_eq!(
        names,
        [
            (Kind::Role, "readers", true),
            (Kind::Role, "app", true),
            (Kind::Role, "typo", false),
            (Kind::Role, "plain", false),
            (Kind::Role, "app", false),
            (Kind::Role, "a", false),
            (Kind::Role, "b", false),
            (Kind::Database, "app", true),
            (Kind::Database, "bad", false),
        ]
    );
    let error = |i: usize| entries[i].declared.clone().unwrap_err().to_string();
    assert!(error(2).contains("unknown field `logn`"), "{}", error(2));
    assert!(error(3).contains("password_file"), "{}", error(3));
    assert!(error(4).contains("declared twice"), "{}", error(4));
    assert!(error(5).contains("cycle"), "{}", error(5));
    assert_eq!(entries[7].after, ["app"]);
    match &entries[1].declared {
        Ok(Declared::Role { spec, password_file }) => {
            assert_eq!(password_file.as_deref(), Some(std::path::Path::new("/run/secrets/app")));
            assert_eq!(spec.flags, BTreeMap::from([(Flag::Login, true)]));
            assert_eq!(spec.in_roles.as_deref(), Some(&["readers".to_string()][..]));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_syntax_error_rejects_the_file_and_says_where() {
    let error = file::parse("{\"roles\": [\n  {\"name\": \"app\",}\n]}").unwrap_err().to_string();
    assert!(error.contains("line 2 column"), "{error}");
    assert!(file::parse("[]").is_err());
    assert_eq!(file::parse("{}").unwrap(), vec![]);
}
