//! The page a one-time answer link opens (`/a/{token}`, [`crate::links`]): the question, its
//! task, node and progress, and a form; the post answers as the task's owner, once. Opening
//! the page changes nothing (a chat app that previews the link spends nothing); only the post
//! takes the link.

use super::{App, html};
use crate::model::{LinkTaken, Principal, Role};
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};

#[derive(serde::Deserialize)]
pub(super) struct LinkForm {
    text: String,
}

/// A page that says `what` went wrong, with `code`.
fn refused(code: StatusCode, what: &str) -> Response {
    let body = format!("<p class=\"error\" role=\"alert\">{}</p>", html::esc(what));
    let mut r = Html(html::page("Answer link", None, None, &body)).into_response();
    *r.status_mut() = code;
    r
}

/// The link's claim, its task and its question, when all can still be answered; else the
/// page that says why.
async fn open(
    app: &App,
    token: &str,
) -> Result<
    (
        crate::links::Claim,
        crate::model::TaskRecord,
        crate::model::QuestionRecord,
    ),
    Response,
> {
    let Some(links) = &app.c.links else {
        return Err(refused(
            StatusCode::NOT_FOUND,
            "This coordinator gives no answer links (notify.public_url is not set).",
        ));
    };
    let claim = match links.check(token, crate::now_ms()) {
        Ok(c) => c,
        Err(crate::links::Refused::Invalid) => {
            return Err(refused(
                StatusCode::NOT_FOUND,
                "This answer link is not valid: it may have been cut short or changed. Open it from the notification again, or answer with `dispatch answer` or on the dashboard.",
            ));
        }
        Err(crate::links::Refused::Expired) => {
            return Err(refused(
                StatusCode::GONE,
                "This answer link has expired. Answer with `dispatch answer` or on the dashboard.",
            ));
        }
    };
    let missing = || {
        refused(
            StatusCode::NOT_FOUND,
            "The task this link answers is gone (removed from the coordinator).",
        )
    };
    let task = match app.c.store.get_task(&claim.task).await {
        Ok(Some(t)) => t,
        _ => return Err(missing()),
    };
    let question = match app.c.store.questions_of(&[claim.task.as_str()]).await {
        Ok(mut m) => m
            .remove(&claim.task)
            .unwrap_or_default()
            .into_iter()
            .find(|q| q.seq == claim.seq),
        Err(_) => None,
    };
    let Some(question) = question else {
        return Err(missing());
    };
    if let Some(a) = &question.answer {
        return Err(refused(
            StatusCode::CONFLICT,
            &format!(
                "{} of `{}` was already answered: \"{a}\". Nothing was changed.",
                dispatch_core::policy::label_of(question.seq, question.kind()),
                task.id
            ),
        ));
    }
    Ok((claim, task, question))
}

/// `/a/{token}`: the question and a form to answer it.
pub(super) async fn page(State(app): State<App>, Path(token): Path<String>) -> Response {
    let (claim, t, q) = match open(&app, &token).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let (done, all) = dispatch_core::Plan::parse(&t.plan_md).progress();
    let kind = q.kind();
    let form = match kind {
        "budget" => r#"<button type="submit" name="text" value="yes">Continue</button>
<button type="submit" name="text" value="no" class="danger">Stop the task</button>"#
            .to_string(),
        "approval" => r#"<button type="submit" name="text" value="yes">Allow</button>
<button type="submit" name="text" value="always">Always allow for this task</button>
<button type="submit" name="text" value="no" class="danger">Deny</button>"#
            .to_string(),
        _ => r#"<label for="answer">Your answer</label>
<textarea id="answer" name="text" rows="3" required></textarea>
<button type="submit">Answer</button>"#
            .to_string(),
    };
    let body = format!(
        r#"<article class="task" aria-labelledby="asks">
<h2 id="asks">`{id}` asks</h2>
<p class="meta">{title}on <b>{node}</b> · by {owner} · {done} of {all} items done</p>
<div class="question" role="group" aria-label="{label}"><p><b>{label}:</b> {text}</p>
<form method="post" action="/a/{token}" class="answer{approval}">{form}</form></div>
<p class="note">This link answers this question once, as {owner}, until {until}.</p>
</article>"#,
        id = html::esc(&t.id),
        title = if t.title.is_empty() {
            String::new()
        } else {
            format!("{} · ", html::esc(&t.title))
        },
        node = html::esc(&t.node),
        owner = html::esc(&t.owner),
        label = html::esc(&dispatch_core::policy::label_of(q.seq, kind)),
        text = html::esc(&q.text),
        token = html::esc(&token),
        approval = if kind.is_empty() { "" } else { " approval" },
        until = dispatch_core::signals::utc_text(claim.expires_ms),
    );
    Html(html::page(&format!("Answer {}", t.id), None, None, &body)).into_response()
}

/// A post from the link's page: the answer, given as the task's owner, once.
pub(super) async fn answer(
    State(app): State<App>,
    headers: HeaderMap,
    Path(token): Path<String>,
    Form(f): Form<LinkForm>,
) -> Response {
    // Only the page's own form: a post from another site is refused before anything is read.
    let cross_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site");
    if cross_site {
        return refused(
            StatusCode::FORBIDDEN,
            "Refused: the answer came from another site. Nothing was changed.",
        );
    }
    let (claim, t, q) = match open(&app, &token).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let text = f.text.trim();
    // An answer the question cannot take does not spend the link.
    if !q.kind().is_empty() && crate::model::approval_answer(text).is_none() {
        return refused(
            StatusCode::BAD_REQUEST,
            "Answer with one of the page's buttons. The link still works.",
        );
    }
    if text.is_empty() {
        return refused(
            StatusCode::BAD_REQUEST,
            "The answer is empty. The link still works.",
        );
    }
    let Some(links) = &app.c.links else {
        return refused(StatusCode::NOT_FOUND, "No answer links here.");
    };
    match links.take(&claim, crate::now_ms()).await {
        Ok(LinkTaken::Taken) => {}
        Ok(LinkTaken::Used(at)) => {
            return refused(
                StatusCode::GONE,
                &format!(
                    "This answer link was used at {}: a link answers once. Nothing was changed.",
                    dispatch_core::signals::utc_text(at)
                ),
            );
        }
        Ok(LinkTaken::Expired) => {
            return refused(StatusCode::GONE, "This answer link has expired.");
        }
        Ok(LinkTaken::Unknown) | Err(_) => {
            return refused(StatusCode::NOT_FOUND, "This answer link is not valid.");
        }
    }
    let who = if t.owner == "local" {
        Principal::Local
    } else {
        Principal::User {
            token: format!("link:{}", &claim.id[..claim.id.len().min(12)]),
            name: t.owner.clone(),
            role: Role::Member,
            nodes: t.allowed_nodes.clone(),
        }
    };
    match app.c.answer(&t.id, q.seq, text, "", &who).await {
        Ok(_) => {
            let body = format!(
                "<p role=\"status\">Answered: `{}` has your answer, as {}. You can close this page.</p>",
                html::esc(&t.id),
                html::esc(&t.owner)
            );
            Html(html::page("Answered", None, None, &body)).into_response()
        }
        Err(e) => refused(
            StatusCode::CONFLICT,
            &format!("The answer was not taken: {e}"),
        ),
    }
}
