//! Requests served together: the engine's state, the sessions lent to requests, and the batch
//! that requests join and leave between steps (speculative decoding, early exit and scoring run
//! alone instead).

use super::*;

pub(super) struct State {
    pub(super) engine: Option<Arc<Engine>>,
    /// The loaded model's cache options, for the sessions of requests served together.
    pub(super) kv: KvOptions,
    /// The conversation, while no request holds it.
    pub(super) session: Option<Session>,
    /// Generations running together (preparing their prompt or in the batch).
    pub(super) streams: usize,
    /// A generation or scoring that runs alone holds the engine.
    pub(super) alone: bool,
    /// Requests ready for the batch, taken in at its next step.
    pub(super) joining: Vec<Join>,
    /// The batch is running.
    pub(super) driving: bool,
    /// A load is between its checks and its upload.
    pub(super) loading: bool,
}

impl State {
    pub(super) fn busy(&self) -> bool {
        self.streams > 0 || self.alone
    }
}

/// A session lent to a request: the engine's conversation, or one made for the request.
pub(super) struct Lent {
    pub(super) session: Session,
    pub(super) conversation: bool,
}

impl std::borrow::Borrow<Session> for Lent {
    fn borrow(&self) -> &Session {
        &self.session
    }
}

impl std::borrow::BorrowMut<Session> for Lent {
    fn borrow_mut(&mut self) -> &mut Session {
        &mut self.session
    }
}

/// The settling functions of a request's promise.
pub(super) struct Reply {
    pub(super) resolve: Function,
    pub(super) reject: Function,
}

impl Reply {
    /// A promise and the functions that settle it.
    pub(super) fn new() -> (Promise, Reply) {
        let mut reply = None;
        let promise = Promise::new(&mut |resolve, reject| reply = Some(Reply { resolve, reject }));
        (promise, reply.expect("the promise executor runs at once"))
    }

    pub(super) fn settle<T: Serialize>(self, result: crate::error::Result<T>) {
        let settled = match result.map_err(|e| {
            note_device_lost(&e);
            js_error(e)
        }) {
            Ok(value) => match to_js(&value) {
                Ok(value) => self.resolve.call1(&JsValue::NULL, &value),
                Err(e) => self.reject.call1(&JsValue::NULL, &e),
            },
            Err(e) => self.reject.call1(&JsValue::NULL, &e),
        };
        // Settling a promise runs no code of the page's: it cannot throw.
        let _ = settled;
    }
}

/// A request on its way into the batch.
pub(super) struct Join {
    pub(super) session: Lent,
    pub(super) prompt: Vec<u32>,
    pub(super) options: GenerateOptions,
    pub(super) listener: WebListener,
    pub(super) pruned: Option<PromptPruneReport>,
    pub(super) reply: Reply,
}

/// Takes the session back from a request that ended: the conversation's is kept, one made for
/// the request is dropped with its cache.
pub(super) fn give_back(state: &RefCell<State>, lent: Lent) {
    let mut s = state.borrow_mut();
    if lent.conversation {
        s.session = Some(lent.session);
    }
    s.streams -= 1;
}

/// Whether a generation runs alone rather than in the batch: speculative decoding and early
/// exit shape each step for one conversation.
pub(super) fn runs_alone(options: &GenerateOptions) -> bool {
    options.speculative.is_some() || options.early_exit.is_some()
}

/// Hands a request to the batch, starting the batch when it is not running.
pub(super) fn join(state: &Rc<RefCell<State>>, join: Join) {
    state.borrow_mut().joining.push(join);
    drive(state);
}

/// Runs the batch while requests are in it, taking in those that join between steps.
pub(super) fn drive(state: &Rc<RefCell<State>>) {
    let engine = {
        let mut s = state.borrow_mut();
        let Some(engine) = s.engine.clone() else { return };
        if s.driving {
            return;
        }
        s.driving = true;
        engine
    };
    let state = Rc::clone(state);
    wasm_bindgen_futures::spawn_local(async move {
        let mut batch: Batch<'static, Lent> = Batch::new(engine);
        let mut replies: HashMap<u64, (Reply, Option<PromptPruneReport>)> = HashMap::new();
        loop {
            let joining = std::mem::take(&mut state.borrow_mut().joining);
            for j in joining {
                match batch.join(j.session, j.prompt, &j.options, Box::new(j.listener)) {
                    Ok(id) => {
                        replies.insert(id, (j.reply, j.pruned));
                    }
                    Err((lent, e)) => {
                        give_back(&state, lent);
                        j.reply.settle::<()>(Err(e));
                    }
                }
            }
            if batch.is_empty() {
                state.borrow_mut().driving = false;
                return;
            }
            for finished in batch.step().await {
                give_back(&state, finished.session);
                if let Some((reply, pruned)) = replies.remove(&finished.id) {
                    reply.settle(finished.result.map(|mut generation| {
                        generation.stats.pruned_tokens = pruned.as_ref().map_or(0, |r| r.pruned_tokens);
                        generation.pruned = pruned;
                        generation
                    }));
                }
            }
        }
    });
}
