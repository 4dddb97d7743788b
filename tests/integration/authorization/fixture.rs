//! The matrix's server: its users and access group, each cell's own conversation, and the runner.

use assignment_service::auth::hash_token;
use assignment_service::pb;
use tonic::transport::Channel;

use super::calls::{CallMetadata, Subject, VIEWABLE_TAG, call};
use super::judge::same_as_missing;
use super::{Cell, Expect, OTHER_CAMPAIGN, Row, SYSTEM_TOKEN, USER_TOKEN, USERS, is_system, rpcs};
use crate::harness::{CAMPAIGN, NO_SWEEP, TestApp};
use crate::snapshot::Snapshot;

/// A server with the users, an access group letting `org-view` view conversations tagged
/// [`VIEWABLE_TAG`], and a channel to it; `setup` is how the test itself calls (system token, admin).
pub struct Fixture {
    app: TestApp,
    channel: Channel,
    setup: CallMetadata,
}

impl Fixture {
    pub async fn start(with_tokens: bool) -> Self {
        let app = if with_tokens {
            let tokens = tokens_file();
            let mut flags = vec!["--tokens-file", &tokens];
            flags.extend(NO_SWEEP);
            let app = TestApp::start_configured(&flags).await;
            let _ = std::fs::remove_file(tokens);
            app
        } else {
            TestApp::start_configured(&NO_SWEEP).await
        };
        let channel = app.channel().await;
        let setup = CallMetadata {
            campaign: CAMPAIGN,
            actor: Some("admin".into()),
            token: with_tokens.then(|| SYSTEM_TOKEN.to_owned()),
            repeated: None,
        };
        let fixture = Self {
            app,
            channel,
            setup,
        };
        for (user, role) in USERS {
            fixture.upsert_user(CAMPAIGN, user, *role).await;
        }
        fixture
            .upsert_user(OTHER_CAMPAIGN, "admin-elsewhere", pb::Role::Admin)
            .await;
        let mut directory =
            pb::directory_service_client::DirectoryServiceClient::new(fixture.channel.clone());
        let deactivate = pb::DeactivateUserRequest {
            user_id: "admin-inactive".into(),
        };
        directory
            .deactivate_user(fixture.setup.request(deactivate))
            .await
            .unwrap();
        fixture.create_group("viewers").await;
        fixture
    }

    async fn upsert_user(&self, campaign: &'static str, user_id: &str, role: pb::Role) {
        let caller = CallMetadata {
            campaign,
            ..self.setup.clone()
        };
        let request = pb::UpsertUserRequest {
            user_id: user_id.into(),
            role: role.into(),
            display_name: user_id.into(),
        };
        pb::directory_service_client::DirectoryServiceClient::new(self.channel.clone())
            .upsert_user(caller.request(request))
            .await
            .unwrap();
    }

    /// A view-only group on tagged conversations with `org-view` in it; returns its id.
    async fn create_group(&self, name: &str) -> String {
        let request = pb::CreateAccessGroupRequest {
            name: name.into(),
            permissions: Some(pb::AccessGroupPermissions {
                view: true,
                reply: false,
            }),
            scope: Some(pb::AccessGroupScope {
                member_tags: vec![VIEWABLE_TAG.into()],
                ..Default::default()
            }),
            organizer_ids: vec!["org-view".into()],
        };
        pb::access_group_service_client::AccessGroupServiceClient::new(self.channel.clone())
            .create_access_group(self.setup.request(request))
            .await
            .unwrap()
            .into_inner()
            .access_group
            .unwrap()
            .access_group_id
    }

    /// The cell's own conversation (and access group, for the RPCs that name one), in the cell's state.
    async fn prepare(&self, cell: Cell, method: &str) -> Subject {
        let unique = format!("{cell:?}/{method}");
        let (tags, holder, expected_version) = cell.conversation();
        let mut directory =
            pb::directory_service_client::DirectoryServiceClient::new(self.channel.clone());
        let conversation = pb::UpsertConversationRequest {
            conversation_id: unique.clone(),
            member_id: "member".into(),
            member_tags: tags.iter().map(|t| t.to_string()).collect(),
        };
        directory
            .upsert_conversation(self.setup.request(conversation))
            .await
            .unwrap();
        if let Some(holder) = holder {
            let assign = pb::AssignConversationRequest {
                conversation_id: unique.clone(),
                assignee_id: holder.into(),
                expected_version: None,
            };
            pb::assignment_service_client::AssignmentServiceClient::new(self.channel.clone())
                .assign_conversation(self.setup.request(assign))
                .await
                .unwrap();
        }
        let group = if method.contains("AccessGroup") || method.ends_with("Organizers") {
            self.create_group(&unique).await
        } else {
            String::new()
        };
        Subject {
            conversation: unique.clone(),
            group,
            assignee: cell.actor().unwrap_or("admin").to_owned(),
            expected_version,
            unique,
        }
    }

    /// Runs one cell: the call (and, for hidden conversations, the same call about a missing one).
    async fn check(
        &self,
        cell: Cell,
        method: &str,
        system: bool,
        expect: Expect,
    ) -> Result<(), String> {
        let subject = self.prepare(cell, method).await;
        let caller = cell.caller(system);
        let before = Snapshot::take(self.app.store.pool()).await;
        let answer = call(&self.channel, method, &caller, &subject).await;
        match expect {
            Expect::Hidden | Expect::HiddenAs(..) => {
                let missing = Subject {
                    conversation: format!("missing/{method}"),
                    ..subject.clone()
                };
                let about_missing = call(&self.channel, method, &caller, &missing).await;
                let (hidden_id, missing_id) = (&subject.conversation, &missing.conversation);
                same_as_missing(expect, &answer, hidden_id, &about_missing, missing_id)?;
            }
            _ => expect.check(&answer, &subject.conversation)?,
        }
        if expect.refuses() {
            let after = Snapshot::take(self.app.store.pool()).await;
            if let Some(changed) = after.changes_since(&before) {
                return Err(format!("refused, yet it changed {changed}"));
            }
        }
        Ok(())
    }

    /// Runs every applicable cell of `table` and fails naming each cell that disagrees; returns how many
    /// cells ran.
    pub async fn run(&self, cells: [Cell; 4], table: &[Row]) -> usize {
        let rpcs = rpcs();
        for (row, _) in table {
            assert!(
                rpcs.iter().any(|(_, method)| method == row),
                "matrix row for {row}, which is no RPC of assignment.v1"
            );
        }
        let mut failures = Vec::new();
        let mut ran = 0;
        for (service, method) in &rpcs {
            let Some((_, expects)) = table.iter().find(|(row, _)| row == method) else {
                panic!("no matrix row for {method}");
            };
            let system = is_system(service, method);
            for (&cell, &expect) in cells.iter().zip(expects) {
                let applies = cell.applies_to(system);
                let result = match expect {
                    Expect::NotApplicable if applies => Err("marked NA, but it applies".into()),
                    Expect::NotApplicable => continue,
                    _ if !applies => Err("does not apply: mark it NA".into()),
                    _ => {
                        ran += 1;
                        self.check(cell, method, system, expect).await
                    }
                };
                if let Err(why) = result {
                    failures.push(format!("{service}.{method} × {cell:?}: {why}"));
                }
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {ran} cells disagree with the contract:\n{}",
            failures.len(),
            failures.join("\n")
        );
        ran
    }
}

/// A tokens file with one system and one user token.
fn tokens_file() -> String {
    let path = std::env::temp_dir().join(format!("matrix-tokens-{}", uuid::Uuid::new_v4()));
    let lines = format!(
        "flow-builder system {}\nmessaging user {}\n",
        hash_token(SYSTEM_TOKEN),
        hash_token(USER_TOKEN)
    );
    std::fs::write(&path, lines).unwrap();
    path.to_string_lossy().into_owned()
}
