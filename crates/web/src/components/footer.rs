//! The footer: where the computing happens, what untrained means, and the weights' licence
//! (BSD-2-Clause asks for its notice wherever the weights ship).

use yew::prelude::*;

#[function_component(Footer)]
pub fn footer() -> Html {
    html! {
        <footer>
            <p>
                { "Everything runs in your browser (Rust → WebAssembly, inference in a Web Worker): your image never leaves this page. " }
                { "Untrained models have deterministic random weights (He initialisation, seed 0): their filters and activations show the architecture, not learned features, and they make no predictions." }
            </p>
            <p class="license" data-testid="weights-license">
                { "Pretrained CIFAR-10 ResNet-20/56 weights from " }
                <a href="weights/LICENSE-pytorch_resnet_cifar10">{ "akamaster/pytorch_resnet_cifar10" }</a>
                { ", Copyright (c) 2018, Yerlan Idelbayev, BSD 2-Clause License. " }
            </p>
            <details class="license-text">
                <summary>{ "Licence of the pretrained weights (BSD-2-Clause)" }</summary>
                <pre>{ include_str!("../../../../www/weights/LICENSE-pytorch_resnet_cifar10") }</pre>
            </details>
        </footer>
    }
}
