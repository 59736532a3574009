//! Requests served together: the engine's state, the line of requests waiting for their turn,
//! the sessions lent to requests, and the batch that requests join and leave between steps
//! (speculative decoding, early exit and scoring run alone instead).
//!
//! Admission is decided here, once: a generation joins the batch while fewer than
//! [`MAX_STREAMS`] run and nothing runs alone; work that runs alone starts when nothing runs;
//! nothing starts while a load is in progress. What does not fit waits in line, in order (a
//! request that runs alone holds back those behind it), and an aborted signal takes it out.

use std::collections::VecDeque;

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
    /// Requests waiting for their turn, in order.
    pub(super) waiting: VecDeque<Waiting>,
    /// The next waiting request's ticket.
    pub(super) tickets: u64,
    /// The most host memory allocated at once during the last load that succeeded.
    pub(super) load_peak: Option<u64>,
}

impl State {
    pub(super) fn new() -> State {
        State {
            engine: None,
            kv: KvOptions::default(),
            session: None,
            streams: 0,
            alone: false,
            joining: Vec::new(),
            driving: false,
            loading: false,
            waiting: VecDeque::new(),
            tickets: 0,
            load_peak: None,
        }
    }

    /// A generation or scoring runs.
    pub(super) fn running(&self) -> bool {
        self.streams > 0 || self.alone
    }

    /// Something runs or waits: a load, reset or unload now would pull the model from under it.
    pub(super) fn busy(&self) -> bool {
        self.running() || !self.waiting.is_empty()
    }

    /// Whether work may start now: one that runs alone when nothing runs, one for the batch
    /// while it has room and nothing runs alone; neither during a load.
    fn admits(&self, alone: bool) -> bool {
        !self.loading && !self.alone && if alone { self.streams == 0 } else { self.streams < MAX_STREAMS }
    }
}

/// What starts a request at its turn; `true` when it was aborted while waiting instead (it
/// settles its promise as aborted then).
pub(super) type Start = Box<dyn FnOnce(&Rc<RefCell<State>>, bool)>;

/// A request waiting for its turn.
pub(super) struct Waiting {
    ticket: u64,
    alone: bool,
    start: Start,
    abort: Option<AbortHook>,
}

/// The `abort` listener a waiting request keeps on its signal, removed when it starts.
struct AbortHook {
    signal: JsValue,
    listener: Closure<dyn FnMut()>,
}

impl AbortHook {
    /// Listens for `signal`'s abort (none for `undefined`, `null` or a value that is not an
    /// event target).
    fn new(signal: &JsValue, state: &Rc<RefCell<State>>, ticket: u64) -> Option<AbortHook> {
        let add = Reflect::get(signal, &"addEventListener".into()).ok()?.dyn_into::<Function>().ok()?;
        let state = Rc::downgrade(state);
        // Deferred: the signal may abort from inside a call that holds the state.
        let listener = Closure::<dyn FnMut()>::new(move || {
            let state = state.clone();
            wasm_bindgen_futures::spawn_local(async move {
                if let Some(state) = state.upgrade() {
                    withdraw(&state, ticket);
                }
            });
        });
        add.call2(signal, &"abort".into(), listener.as_ref()).ok()?;
        Some(AbortHook { signal: signal.clone(), listener })
    }

    fn remove(self) {
        let remove =
            Reflect::get(&self.signal, &"removeEventListener".into()).ok().and_then(|f| f.dyn_into::<Function>().ok());
        if let Some(remove) = remove {
            let _ = remove.call2(&self.signal, &"abort".into(), self.listener.as_ref());
        }
    }
}

/// Starts `start` now if it fits and nobody waits before it, else puts it in line. Refuses
/// (with `bad_options`) when no model is loaded or loading.
pub(super) fn submit(state: &Rc<RefCell<State>>, alone: bool, signal: &JsValue, start: Start) -> Result<(), JsValue> {
    let now = {
        let s = state.try_borrow().map_err(|_| busy("the engine is busy"))?;
        if s.engine.is_none() && !s.loading {
            return Err(bad_options("no model is loaded: call load() first"));
        }
        s.waiting.is_empty() && s.admits(alone)
    };
    if now {
        start(state, false);
        return Ok(());
    }
    if is_aborted(signal) {
        start(state, true);
        return Ok(());
    }
    let mut s = state.borrow_mut();
    let ticket = s.tickets;
    s.tickets += 1;
    let abort = AbortHook::new(signal, state, ticket);
    s.waiting.push_back(Waiting { ticket, alone, start, abort });
    Ok(())
}

/// A request's promise: the request waits its turn (see [`submit`]); then `start` gets its
/// listener, told where the model loaded at that turn runs, and the reply to settle. Aborted
/// while it waits, the promise rejects with `aborted`.
pub(super) fn request(
    state: &Rc<RefCell<State>>,
    alone: bool,
    listener: WebListener,
    start: impl FnOnce(&Rc<RefCell<State>>, WebListener, Reply) + 'static,
) -> Result<Promise, JsValue> {
    let (promise, reply) = Reply::new();
    let signal = listener.signal.clone();
    let start = move |state: &Rc<RefCell<State>>, aborted: bool| {
        if aborted {
            return reply.settle::<()>(Err(Error::Aborted));
        }
        let listener = WebListener { on_cpu: runs_on_cpu(state), ..listener };
        start(state, listener, reply)
    };
    submit(state, alone, &signal, Box::new(start))?;
    Ok(promise)
}

/// Starts waiting requests in order while they fit.
pub(super) fn next(state: &Rc<RefCell<State>>) {
    loop {
        let waiting = {
            let mut s = state.borrow_mut();
            match s.waiting.front() {
                Some(w) if s.admits(w.alone) => s.waiting.pop_front(),
                _ => return,
            }
        };
        let Some(w) = waiting else { return };
        if let Some(abort) = w.abort {
            abort.remove();
        }
        (w.start)(state, false);
    }
}

/// Takes an aborted request out of line (if it has not started) and settles it as aborted.
fn withdraw(state: &Rc<RefCell<State>>, ticket: u64) {
    let waiting = {
        let mut s = state.borrow_mut();
        let at = s.waiting.iter().position(|w| w.ticket == ticket);
        at.and_then(|at| s.waiting.remove(at))
    };
    if let Some(w) = waiting {
        if let Some(abort) = w.abort {
            abort.remove();
        }
        (w.start)(state, true);
        // The request held back those behind it.
        next(state);
    }
}

/// Whether the model loaded now runs on the CPU.
pub(super) fn runs_on_cpu(state: &Rc<RefCell<State>>) -> bool {
    state.borrow().engine.as_deref().is_some_and(|e| !on_webgpu(e))
}

/// Whether `signal` (an `AbortSignal`, or `undefined`) has aborted.
pub(super) fn is_aborted(signal: &JsValue) -> bool {
    !signal.is_undefined() && !signal.is_null() && Reflect::get(signal, &"aborted".into()).is_ok_and(|v| v.is_truthy())
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

    /// Rejects with a JS error value.
    pub(super) fn fail(self, error: JsValue) {
        self.settle_js(Err(error));
    }

    /// Settles the promise with `result` (as a JS value), or its error.
    pub(super) fn settle_js(self, result: Result<JsValue, JsValue>) {
        let settled = match result {
            Ok(value) => self.resolve.call1(&JsValue::NULL, &value),
            Err(e) => self.reject.call1(&JsValue::NULL, &e),
        };
        // Settling a promise runs no code of the page's: it cannot throw.
        let _ = settled;
    }

    /// Settles the promise with `result` (serialized), or its error.
    pub(super) fn settle<T: Serialize>(self, result: crate::error::Result<T>) {
        let result = result.map_err(|e| {
            note_device_lost(&e);
            js_error(e)
        });
        self.settle_js(result.and_then(|value| to_js(&value)));
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

/// A session for a request served with others: the conversation's when it is free, else a
/// new one. Called at the request's turn (see [`submit`]).
pub(super) fn lend(state: &Rc<RefCell<State>>) -> Result<Lent, JsValue> {
    let mut s = state.borrow_mut();
    let engine = s.engine.clone().ok_or_else(|| bad_options("no model is loaded: call load() first"))?;
    if on_webgpu(&engine) {
        ready_device()?;
    }
    let lent = match s.session.take() {
        Some(session) => Lent { session, conversation: true },
        None => Lent { session: engine.session(&s.kv).map_err(js_error)?, conversation: false },
    };
    s.streams += 1;
    Ok(lent)
}

/// Takes the session back from a request that ended (the conversation's is kept, one made for
/// the request is dropped with its cache) and starts what waited for the room.
pub(super) fn give_back(state: &Rc<RefCell<State>>, lent: Lent) {
    {
        let mut s = state.borrow_mut();
        if lent.conversation {
            s.session = Some(lent.session);
        }
        s.streams -= 1;
    }
    next(state);
}

/// Runs `run` on the conversation's session, alone (called at its turn: nothing else runs), and
/// settles `reply` with its result. The session comes back whatever the result, so the engine
/// stays usable.
pub(super) fn run_alone<F, Fut, T>(state: &Rc<RefCell<State>>, reply: Reply, run: F)
where
    F: FnOnce(Session) -> Fut + 'static,
    Fut: std::future::Future<Output = (Session, crate::error::Result<T>)> + 'static,
    T: Serialize,
{
    let session = {
        let mut s = state.borrow_mut();
        let ready = match s.engine.as_deref() {
            Some(engine) if on_webgpu(engine) => ready_device().map(|_| ()),
            _ => Ok(()),
        };
        let session =
            ready.and_then(|()| s.session.take().ok_or_else(|| bad_options("no model is loaded: call load() first")));
        match session {
            Ok(session) => {
                s.alone = true;
                session
            }
            Err(e) => return reply.fail(e),
        }
    };
    let state = Rc::clone(state);
    wasm_bindgen_futures::spawn_local(async move {
        let (session, result) = run(session).await;
        {
            // Nothing borrows the state across an await, so this cannot fail; were it to,
            // the session would be lost, never the flag left set.
            let mut s = state.borrow_mut();
            s.session = Some(session);
            s.alone = false;
        }
        reply.settle(result);
        next(&state);
    });
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
