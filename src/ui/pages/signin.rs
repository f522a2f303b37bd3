//! Signing in and out, with the same accounts, password checks and failure
//! limits as the API's basic authentication.

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use http::header::SET_COOKIE;
use http::StatusCode;
use maud::{html, Markup};

use crate::registry::Error;
use crate::ui::layout::{self, Frame};
use crate::ui::session::{self, SESSION_COOKIE, SESSION_TTL};
use crate::ui::visitor::Form;
use crate::ui::{Failure, Ui, Visitor};

pub async fn form(visitor: Visitor) -> Response {
    if !visitor.signin_on() {
        return Failure::new(
            StatusCode::NOT_FOUND,
            "Sign-in is off on this registry: everyone may browse and change everything.",
        )
        .page(Some(&visitor));
    }
    page(&visitor, StatusCode::OK, None)
}

fn page(visitor: &Visitor, status: StatusCode, error: Option<&str>) -> Response {
    let content: Markup = html! {
        h1 { "Sign in" }
        @if let Some(e) = error {
            p #error .error role="alert" { (e) }
        }
        form #signin-form .stack method="post" action="/ui/signin" {
            (layout::csrf(visitor))
            label for="username" { "User name" }
            input #username name="username" type="text" autocomplete="username" required autofocus;
            label for="password" { "Password" }
            input #password name="password" type="password" autocomplete="current-password" required;
            button #signin-submit type="submit" { "Sign in" }
        }
        p.muted { "Use the account you push and pull with. Robot accounts sign in with their secret." }
    };
    (
        status,
        layout::page(Some(visitor), Frame::titled("Sign in"), content),
    )
        .into_response()
}

pub async fn submit(State(ui): State<Ui>, visitor: Visitor, body: Body) -> Response {
    let result = async {
        let form = Form::read(body).await?;
        visitor.check_csrf(&form, &ui.keys)?;
        let policy = ui.authn.policy()?.ok_or_else(|| {
            Failure::new(StatusCode::NOT_FOUND, "Sign-in is off on this registry.")
        })?;
        let user = form.need("username")?;
        let password = form.get("password").unwrap_or("");
        let caller = match ui
            .authn
            .password_login(visitor.source.ip(), user, password, &policy)
            .await
        {
            Ok(caller) => caller,
            Err(Error::TooManyRequests { retry_after }) => {
                return Ok(page(
                    &visitor,
                    StatusCode::TOO_MANY_REQUESTS,
                    Some(&format!("Too many failed sign-ins from your address: try again in {retry_after} seconds.")),
                ));
            }
            Err(Error::Unauthorized { .. }) => {
                return Ok(page(
                    &visitor,
                    StatusCode::UNAUTHORIZED,
                    Some("Unknown user or wrong password."),
                ))
            }
            Err(e) => return Err(Failure::from(e)),
        };
        tracing::info!(target: "berth::audit", source = %visitor.source, caller = caller.subject(), "signed in to the UI");
        let cookie = session::set_cookie(
            SESSION_COOKIE,
            &ui.keys.session(caller.subject()),
            Some(SESSION_TTL),
            ui.https,
        );
        Ok(([(SET_COOKIE, cookie)], Redirect::to("/ui/")).into_response())
    };
    visitor.respond(result.await)
}

pub async fn signout(State(ui): State<Ui>, visitor: Visitor, body: Body) -> Response {
    let result = async {
        let form = Form::read(body).await?;
        visitor.check_csrf(&form, &ui.keys)?;
        let cookie = session::set_cookie(SESSION_COOKIE, "", Some(0), ui.https);
        Ok(([(SET_COOKIE, cookie)], Redirect::to("/ui/?done=signed-out")).into_response())
    };
    visitor.respond(result.await)
}
