use gpuctl_common::api::{PastAttempt, TaskStatus};
use gpuctl_testkit::{job, queue};

use super::*;
use crate::state::identity::{Token, TokenKind, User};

fn user(name: &str, team: &str, role: Role, lead: bool) -> Principal {
    Principal::User {
        name: name.into(),
        role,
        team: team.into(),
        team_lead: lead,
        token_id: "0123456789ab".into(),
    }
}

fn node(name: &str) -> Principal {
    Principal::Node {
        name: name.into(),
        token_id: "0123456789ab".into(),
    }
}

/// alice and carol in team nlp, bob in vision; queue "nlp" for team nlp;
/// job "train" of alice on node n1 (attempt 2; attempt 1 ran on n3);
/// job "old" with no owner.
fn state() -> State {
    let mut st = State::default();
    for (n, t) in [("alice", "nlp"), ("carol", "nlp"), ("bob", "vision")] {
        st.users.insert(
            n.into(),
            User {
                name: n.into(),
                team: t.into(),
                role: Role::User,
                team_lead: false,
                uid: None,
                allow_root: false,
                created: 0,
            },
        );
    }
    let mut q = queue("nlp").build();
    q.spec.teams = vec!["nlp".into()];
    st.queues.insert("nlp".into(), q);
    let mut j = job("train").attempt(2).build();
    j.metadata.owner = Some("alice".into());
    j.status.tasks = vec![TaskStatus {
        index: 0,
        node: Some("n1".into()),
        ..Default::default()
    }];
    j.status.past_attempts = vec![PastAttempt {
        attempt: 1,
        nodes: vec!["n3".into()],
        reason: String::new(),
        ended_ms: 0,
    }];
    st.jobs.insert("train".into(), j);
    st.jobs.insert("old".into(), job("old").build());
    st.tokens.insert(
        "aaaaaaaaaaaa".into(),
        Token {
            id: "aaaaaaaaaaaa".into(),
            subject: "alice".into(),
            kind: TokenKind::User,
            hash: String::new(),
            created: 0,
            expires_ms: 0,
            revoked: false,
            description: String::new(),
        },
    );
    st
}

fn denied(who: &Principal, a: Action) -> String {
    match authorize(who, &a, &state()) {
        Err(Denied(m)) => m,
        Ok(()) => panic!("{who:?} was allowed {a:?}"),
    }
}

fn allowed(who: &Principal, a: Action) {
    if let Err(e) = authorize(who, &a, &state()) {
        panic!("{who:?} was refused {a:?}: {e}");
    }
}

fn apply<'a>(kind: ApplyKind, name: &'a str, queue: Option<&'a str>) -> Action<'a> {
    Action::Apply { kind, name, queue }
}

fn stop<'a>(verb: &'a str, kind: &'a str, name: &'a str) -> Action<'a> {
    Action::Stop { verb, kind, name }
}

#[test]
fn admins_and_anonymous_callers_may_do_everything() {
    for who in [Principal::Anonymous, user("root", "", Role::Admin, false)] {
        allowed(&who, Action::CreateUser);
        allowed(&who, Action::Audit);
        allowed(&who, stop("cancel", "job", "train"));
        allowed(&who, apply(ApplyKind::Queue, "q", None));
        allowed(&who, Action::Cordon { node: "n1" });
        allowed(&who, Action::ChangePeers);
        allowed(
            &who,
            Action::CreateToken {
                user: "bob",
                join: true,
            },
        );
    }
}

#[test]
fn users_submit_only_to_queues_their_team_or_name_may_use() {
    let bob = user("bob", "vision", Role::User, false);
    assert_eq!(
        denied(&bob, apply(ApplyKind::Job, "j", Some("nlp"))),
        "user \"bob\" (team \"vision\") may not submit to queue \"nlp\" (teams: nlp)"
    );
    allowed(&bob, apply(ApplyKind::Job, "j", None));
    allowed(&bob, apply(ApplyKind::Workflow, "w", None));
    allowed(&bob, apply(ApplyKind::Endpoint, "e", None));
    // A queue that does not exist is the state machine's to refuse.
    allowed(&bob, apply(ApplyKind::Job, "j", Some("nowhere")));
    allowed(
        &user("alice", "nlp", Role::User, false),
        apply(ApplyKind::Job, "j", Some("nlp")),
    );
}

#[test]
fn only_admins_apply_queues() {
    let alice = user("alice", "nlp", Role::User, false);
    assert_eq!(
        denied(&alice, apply(ApplyKind::Queue, "nlp", None)),
        "user \"alice\" may not apply queue \"nlp\": only admins configure queues"
    );
}

#[test]
fn users_stop_their_own_objects_and_team_leads_their_teams() {
    let bob = user("bob", "vision", Role::User, false);
    assert_eq!(
        denied(&bob, stop("cancel", "job", "train")),
        "user \"bob\" may not cancel job \"train\" (owner \"alice\")"
    );
    allowed(
        &user("alice", "nlp", Role::User, false),
        stop("delete", "job", "train"),
    );
    assert_eq!(
        denied(
            &user("carol", "nlp", Role::User, false),
            stop("cancel", "job", "train")
        ),
        "user \"carol\" may not cancel job \"train\" (owner \"alice\")"
    );
    allowed(
        &user("carol", "nlp", Role::User, true),
        stop("cancel", "job", "train"),
    );
    assert_eq!(
        denied(
            &user("bob", "vision", Role::User, true),
            stop("cancel", "job", "train")
        ),
        "user \"bob\" may not cancel job \"train\" (owner \"alice\")"
    );
    assert_eq!(
        denied(&bob, stop("delete", "job", "old")),
        "user \"bob\" may not delete job \"old\" (no owner: only admins may)"
    );
    // Unknown objects are the state machine's to answer (not found).
    allowed(&bob, stop("cancel", "workflow", "nothing"));
}

#[test]
fn viewers_read_only_and_gateways_read_and_report_load() {
    let v = user("v", "", Role::Viewer, false);
    allowed(&v, Action::Read);
    allowed(&v, Action::WhoAmI);
    assert_eq!(
        denied(&v, apply(ApplyKind::Job, "j", None)),
        "user \"v\" is a viewer and may not apply"
    );
    assert_eq!(
        denied(&v, Action::ReportLoad),
        "user \"v\" is a viewer and may not report load"
    );
    let gw = user("gw", "", Role::Gateway, false);
    allowed(&gw, Action::Read);
    allowed(&gw, Action::ReportLoad);
    assert_eq!(
        denied(&gw, stop("cancel", "job", "train")),
        "user \"gw\" has role gateway and may only read and report load, not cancel job \"train\""
    );
    assert_eq!(
        denied(
            &user("bob", "vision", Role::User, false),
            Action::ReportLoad
        ),
        "user \"bob\" may not report load: ReportLoad is for admins"
    );
}

#[test]
fn admin_only_calls_name_the_rule_for_users() {
    let bob = user("bob", "vision", Role::User, false);
    assert_eq!(
        denied(&bob, Action::Cordon { node: "n1" }),
        "user \"bob\" may not cordon node \"n1\": Cordon is for admins"
    );
    assert_eq!(
        denied(&bob, Action::CreateUser),
        "user \"bob\" may not create users: CreateUser is for admins"
    );
    assert_eq!(
        denied(&bob, Action::Audit),
        "user \"bob\" may not read the audit log: Audit is for admins"
    );
    assert_eq!(
        denied(&bob, Action::ChangePeers),
        "user \"bob\" may not change the scheduler replicas: AddPeer/RemovePeer is for admins"
    );
    assert_eq!(
        denied(
            &bob,
            Action::AsNode {
                verb: "register",
                node: "n1"
            }
        ),
        "user \"bob\" may not register as node \"n1\": the node service is for admins"
    );
}

#[test]
fn users_manage_only_their_own_tokens() {
    let alice = user("alice", "nlp", Role::User, false);
    let bob = user("bob", "vision", Role::User, false);
    allowed(
        &alice,
        Action::CreateToken {
            user: "",
            join: false,
        },
    );
    allowed(
        &alice,
        Action::CreateToken {
            user: "alice",
            join: false,
        },
    );
    assert_eq!(
        denied(
            &alice,
            Action::CreateToken {
                user: "bob",
                join: false
            }
        ),
        "user \"alice\" may not create tokens for user \"bob\", only for themself"
    );
    assert_eq!(
        denied(
            &alice,
            Action::CreateToken {
                user: "",
                join: true
            }
        ),
        "user \"alice\" may not create join tokens: only admins add nodes"
    );
    allowed(&alice, Action::RevokeToken { id: "aaaaaaaaaaaa" });
    assert_eq!(
        denied(&bob, Action::RevokeToken { id: "aaaaaaaaaaaa" }),
        "user \"bob\" may not revoke token aaaaaaaaaaaa of user \"alice\""
    );
}

#[test]
fn nodes_act_only_as_themselves() {
    let n1 = node("n1");
    let n2 = node("n2");
    let n3 = node("n3");
    allowed(
        &n1,
        Action::AsNode {
            verb: "register",
            node: "n1",
        },
    );
    assert_eq!(
        denied(
            &n2,
            Action::AsNode {
                verb: "register",
                node: "n1"
            }
        ),
        "node \"n2\" may not register as node \"n1\""
    );
    let report = |node, attempt| Action::ReportTask {
        node,
        job: "train",
        index: 0,
        attempt,
    };
    allowed(&n1, report("n1", 2));
    assert_eq!(
        denied(&n2, report("n2", 2)),
        "node \"n2\" may not report task train/0, which runs on node \"n1\""
    );
    assert_eq!(
        denied(&n2, report("n1", 2)),
        "node \"n2\" may not report for node \"n1\""
    );
    // A late report of an earlier attempt comes from where that attempt ran.
    allowed(&n3, report("n3", 1));
    assert_eq!(
        denied(&n1, Action::Read),
        "node \"n1\" may only call the node service as itself, not reads"
    );
    assert_eq!(
        denied(&n1, apply(ApplyKind::Job, "j", None)),
        "node \"n1\" may only call the node service as itself, not Apply"
    );
    allowed(&n1, Action::GoneWorkflows);
}

#[test]
fn join_tokens_only_join() {
    let j = Principal::Join {
        token_id: "bbbbbbbbbbbb".into(),
    };
    allowed(&j, Action::Join);
    assert_eq!(
        denied(&j, Action::Read),
        "token gpuctl_bbbbbbbbbbbb is a join token: it is good only for a node daemon's join (NodeService.Join), not for reads"
    );
    assert_eq!(
        denied(
            &j,
            Action::AsNode {
                verb: "register",
                node: "n1"
            }
        ),
        "token gpuctl_bbbbbbbbbbbb is a join token: it is good only for a node daemon's join (NodeService.Join), not for the node service"
    );
}

/// [`state`] plus secret "hf" of alice (team nlp) and "legacy" without owner.
fn with_secrets() -> State {
    let mut st = state();
    let secret = |name: &str, owner: Option<&str>| gpuctl_common::secret::Secret {
        api_version: "gpuctl.io/v1".into(),
        kind: "Secret".into(),
        metadata: gpuctl_common::api::ObjectMeta {
            name: name.into(),
            owner: owner.map(String::from),
            ..Default::default()
        },
        data: [("k".to_string(), "dg==".to_string())].into(),
        string_data: Default::default(),
    };
    st.secrets.insert("hf".into(), secret("hf", Some("alice")));
    st.secrets.insert("legacy".into(), secret("legacy", None));
    st
}

#[test]
fn a_secret_is_used_replaced_and_deleted_only_within_its_team() {
    let st = with_secrets();
    let check = |who: &Principal, a: Action| authorize(who, &a, &st).map_err(|Denied(m)| m);
    let (alice, carol) = (
        user("alice", "nlp", Role::User, false),
        user("carol", "nlp", Role::User, false),
    );
    let bob = user("bob", "vision", Role::User, false);
    for who in [&alice, &carol] {
        check(who, Action::UseSecret { name: "hf" }).unwrap();
        check(who, apply(ApplyKind::Secret, "hf", None)).unwrap();
    }
    assert_eq!(
        check(&bob, Action::UseSecret { name: "hf" }).unwrap_err(),
        "user \"bob\" (team \"vision\") may not use secret \"hf\" (owner \"alice\", team \"nlp\")"
    );
    assert_eq!(
        check(&bob, apply(ApplyKind::Secret, "hf", None)).unwrap_err(),
        "user \"bob\" may not replace secret \"hf\" (owner \"alice\", team \"nlp\")"
    );
    assert_eq!(
        check(&alice, Action::UseSecret { name: "legacy" }).unwrap_err(),
        "user \"alice\" (team \"nlp\") may not use secret \"legacy\" (no owner: only admins may)"
    );
    // A new secret is anyone's to create; a missing one is the apply's to refuse.
    check(&bob, apply(ApplyKind::Secret, "mine", None)).unwrap();
    check(&bob, Action::UseSecret { name: "nope" }).unwrap();
    // Deleting goes by owner, as for jobs.
    check(&alice, stop("delete", "secret", "hf")).unwrap();
    assert_eq!(
        check(&carol, stop("delete", "secret", "hf")).unwrap_err(),
        "user \"carol\" may not delete secret \"hf\" (owner \"alice\")"
    );
    assert!(check(
        &user("v", "nlp", Role::Viewer, false),
        Action::UseSecret { name: "hf" }
    )
    .is_err());
    check(&Principal::Anonymous, Action::UseSecret { name: "legacy" }).unwrap();
}

#[test]
fn endpoint_rollouts_and_updates_are_for_its_owner_team_lead_or_an_admin() {
    let mut st = state();
    let mut ep = gpuctl_testkit::endpoint("serve").build();
    ep.metadata.owner = Some("alice".into());
    st.endpoints.insert("serve".into(), ep);
    let bob = user("bob", "vision", Role::User, false);
    let viewer = user("vera", "nlp", Role::Viewer, false);
    for verb in ["update", "rollout promote", "rollout undo"] {
        let a = stop(verb, "endpoint", "serve");
        assert_eq!(
            authorize(&bob, &a, &st),
            Err(Denied(format!(
                "user \"bob\" may not {verb} endpoint \"serve\" (owner \"alice\")"
            )))
        );
        assert!(authorize(&viewer, &a, &st).is_err());
        for ok in [
            user("alice", "nlp", Role::User, false),
            user("carol", "nlp", Role::User, true),
            user("root", "", Role::Admin, false),
        ] {
            assert_eq!(authorize(&ok, &a, &st), Ok(()), "{ok:?} {verb}");
        }
    }
}

#[test]
fn cluster_workflow_templates_are_for_admins_and_workflow_templates_for_their_owner() {
    let alice = user("alice", "nlp", Role::User, false);
    let bob = user("bob", "vision", Role::User, false);
    let m = denied(
        &alice,
        Action::Apply {
            kind: ApplyKind::ClusterWorkflowTemplate,
            name: "lib",
            queue: None,
        },
    );
    assert!(m.contains("only admins"), "{m}");
    let admin = user("root", "", Role::Admin, false);
    let apply = Action::Apply {
        kind: ApplyKind::ClusterWorkflowTemplate,
        name: "lib",
        queue: None,
    };
    assert!(authorize(&admin, &apply, &state()).is_ok());
    for kind in [ApplyKind::WorkflowTemplate, ApplyKind::CronWorkflow] {
        let a = Action::Apply {
            kind,
            name: "t",
            queue: None,
        };
        assert!(authorize(&bob, &a, &state()).is_ok(), "{kind:?}");
    }
    // Replacing or deleting one takes its owner.
    let mut st = state();
    let doc = "apiVersion: argoproj.io/v1alpha1\nkind: WorkflowTemplate\nmetadata: {name: t}\nspec:\n  templates:\n  - {name: m, container: {image: x, command: [\"true\"]}}\n";
    let t = gpuctl_pipelines::parse_workflow_template_document(
        "t.yaml",
        serde_yaml_ng::from_str(doc).unwrap(),
    )
    .unwrap();
    st.apply(
        1,
        &crate::state::Envelope::new(
            0,
            crate::state::Command::PutWorkflowTemplate {
                cluster: false,
                template: Box::new(t),
                owner: Some("alice".into()),
            },
        ),
    )
    .unwrap();
    let replace = |verb| Action::Stop {
        verb,
        kind: "workflowtemplate",
        name: "t",
    };
    assert!(authorize(&alice, &replace("replace"), &st).is_ok());
    let Err(Denied(m)) = authorize(&bob, &replace("delete"), &st) else {
        panic!("bob may not delete alice's template")
    };
    assert_eq!(
        m,
        "user \"bob\" may not delete workflowtemplate \"t\" (owner \"alice\")"
    );
}
