//! The error banner: the one place a failure is shown (bad file, download, worker, panic) until
//! it is dismissed or the next image succeeds.

use yew::prelude::*;

#[derive(Properties, PartialEq)]
pub struct Props {
    pub message: AttrValue,
    pub on_dismiss: Callback<()>,
}

#[function_component(ErrorBanner)]
pub fn error_banner(p: &Props) -> Html {
    let dismiss = p.on_dismiss.reform(|_: MouseEvent| ());
    html! {
        <div class="error" role="alert" data-testid="error-banner">
            <span>{ p.message.clone() }</span>
            <button aria-label="dismiss" onclick={dismiss}>{ "×" }</button>
        </div>
    }
}
