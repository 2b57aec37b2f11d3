//! The serialized shapes other crates and the CLI's `--json` output depend on.

use causeway_policy::{
    Action, Audience, Decision, DenyReason, Grant, PeerVisibleDenial, PushRefusal, ShareMode, ShareRule,
};
use causeway_proto::ClusterId;
use serde_json::json;

#[test]
fn share_rule_json_uses_cli_words() {
    let id = ClusterId([0xab; 32]);
    let rule = ShareRule::new(Audience::Cluster(id), ShareMode::Bidirectional, true);
    assert_eq!(
        serde_json::to_value(rule).unwrap(),
        json!({"audience": id.to_string(), "mode": "bidirectional", "read_only": true})
    );
    let public: ShareRule =
        serde_json::from_value(json!({"audience": "public", "mode": "pull", "read_only": false})).unwrap();
    assert_eq!(public, ShareRule::new(Audience::Public, ShareMode::Pull, false));
    let bad = serde_json::from_value::<ShareRule>(json!({"audience": "everyone", "mode": "pull", "read_only": false}));
    assert!(bad.unwrap_err().to_string().contains("invalid share audience"));
}

#[test]
fn decisions_and_reasons_are_snake_case() {
    let deny = Decision::Deny(DenyReason::ModeForbids {
        mode: ShareMode::Pull,
        action: Action::WriteBack,
    });
    assert_eq!(
        serde_json::to_value(deny).unwrap(),
        json!({"deny": {"mode_forbids": {"mode": "pull", "action": "write_back"}}})
    );
    let grant = Decision::Grant(Grant {
        rule_index: 2,
        rule: ShareRule::new(Audience::Linked, ShareMode::Push, false),
    });
    assert_eq!(
        serde_json::to_value(grant).unwrap(),
        json!({"grant": {"rule_index": 2, "rule": {"audience": "linked", "mode": "push", "read_only": false}}})
    );
    assert_eq!(
        serde_json::to_value(DenyReason::NoRuleForPeer).unwrap(),
        json!("no_rule_for_peer")
    );
    assert_eq!(
        serde_json::to_value(PeerVisibleDenial::NotFound).unwrap(),
        json!("not_found")
    );
    assert_eq!(
        serde_json::to_value(PushRefusal::PushNotAccepted).unwrap(),
        json!("push_not_accepted")
    );
}
