"""Train for a time budget (``training.max_time``): plan the number of steps from measured throughput.

Why: a fixed ``max_steps`` is too short on one dataset and too long on
another, while what the user knows is how long they can wait. The Trainer
builds its learning-rate schedule from ``max_steps`` before the first step,
so the plan cannot simply be written there: the run starts with a generous
upper bound (``max_steps``, or :data:`UNBOUNDED_STEPS`), and
:class:`TimeBudgetCallback`

1. plans from the pre-training time estimate (:mod:`tuneforge.train.estimate`),
2. times the optimizer steps after a warm-up step (which pays for first
   allocations and kernel selection) and re-plans from them, again whenever
   the step time drifts or an evaluation/checkpoint cost is first measured,
3. points the schedule at the planned step each time (warm-up and decay end
   there, so the learning rate reaches its floor on the last step), and sets
   ``state.max_steps`` so the Trainer's own flow ends, evaluates and saves there,
4. stops at the deadline regardless, skipping an evaluation that would not fit.

A run therefore ends within one step (plus the final checkpoint save) of its budget.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from typing import Any, Callable

from transformers import TrainerCallback

# The Trainer's step bound while the budget decides: large enough never to end a run first.
UNBOUNDED_STEPS = 10**9


def steps_that_fit(
    seconds: float, step_seconds: float, *, eval_every: int | None = None, eval_seconds: float = 0.0,
    save_every: int | None = None, save_seconds: float = 0.0,
) -> int:
    """Optimizer steps that fit in ``seconds``, with their periodic evaluations and checkpoints.

    The last step is followed by one more evaluation and checkpoint (the Trainer's end-of-training
    ones), reserved up front.

    Example:
        >>> steps_that_fit(100.0, 1.0, eval_every=10, eval_seconds=5.0)
        63
    """
    per_step = step_seconds
    per_step += eval_seconds / eval_every if eval_every else 0.0
    per_step += save_seconds / save_every if save_every else 0.0
    reserve = (eval_seconds if eval_every else 0.0) + (save_seconds if save_every else 0.0)
    return max(math.floor((seconds - reserve) / max(per_step, 1e-9)), 0)


def retarget_schedule(scheduler: Any, args: Any, horizon: int) -> None:
    """Make the run's learning-rate schedule end at step ``horizon`` (its warm-up follows too).

    The schedule is transformers' own for ``args.lr_scheduler_type``, built for the new horizon on a
    throwaway optimizer; only its factor function moves into the running ``LambdaLR``, so the optimizer,
    its state and the step count are untouched. The next step's learning rate follows at once.
    """
    import torch
    from transformers import get_scheduler

    inner = getattr(scheduler, "scheduler", scheduler)  # accelerate's AcceleratedScheduler wraps it
    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    fresh = get_scheduler(
        args.lr_scheduler_type, probe, num_warmup_steps=args.get_warmup_steps(horizon),
        num_training_steps=horizon, scheduler_specific_kwargs=args.lr_scheduler_kwargs or None,
    )
    groups = inner.optimizer.param_groups
    inner.lr_lambdas = [fresh.lr_lambdas[0]] * len(groups)
    for group, base, factor in zip(groups, inner.base_lrs, inner.lr_lambdas):
        group["lr"] = base * factor(inner.last_epoch)
    inner._last_lr = [group["lr"] for group in groups]


class TimeBudgetCallback(TrainerCallback):
    """Plan steps and the learning-rate schedule to end a run in ``seconds``; see the module docstring.

    Args:
        seconds: The budget, counted from the start of training.
        upper_bound: ``training.max_steps`` when also set: the plan never exceeds it.
        estimated_step_seconds: The pre-training estimate, used until steps are measured.
        eval_batches: Validation batches per evaluation (estimates its cost until one is measured).
        measure_steps: Steps timed (after the warm-up step) before the first measured plan.
        drift: Re-plan when the recent step time differs from the planned one by more than this fraction.
        clock: Seconds, monotonic (a parameter so the planning can be driven step by step).
    """

    def __init__(
        self, seconds: float, *, upper_bound: int | None = None, estimated_step_seconds: float | None = None,
        eval_batches: int = 0, measure_steps: int = 3, drift: float = 0.1,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.seconds = seconds
        self.upper_bound = upper_bound
        self.estimated_step_seconds = estimated_step_seconds
        self.eval_batches = eval_batches
        self.measure_steps = measure_steps
        self.drift = drift
        self.clock = clock
        self.planned_steps: int | None = None
        self.plans = 0
        self.stopped_at_deadline = False
        self.elapsed: float | None = None
        self._recent: deque[float] = deque(maxlen=20)
        self._planned_rate: float | None = None
        self._eval_seconds: float | None = None
        self._save_seconds: float | None = None
        self._steps_per_epoch = 0
        self._timed = 0

    # ------------------------------------------------------------------ events

    def on_train_begin(self, args, state, control, lr_scheduler=None, train_dataloader=None, **kwargs):
        self._start = self.clock()
        self.deadline = self._start + self.seconds
        self._first_step = state.global_step  # > 0 when resumed: the budget covers the rest of the run
        self._step_began = self._mark = self._start
        self._scheduler = lr_scheduler
        if train_dataloader is not None:
            self._steps_per_epoch = max(len(train_dataloader) // args.gradient_accumulation_steps, 1)
        rate = self.estimated_step_seconds
        if rate:
            self._plan(args, state, rate)
        else:  # no estimate: one epoch, until the first measured plan
            self._set(args, state, state.global_step + max(self._steps_per_epoch, 1))

    def on_step_begin(self, args, state, control, **kwargs):
        self._step_began = self.clock()

    def on_step_end(self, args, state, control, **kwargs):
        now = self.clock()
        self._mark = now
        if state.global_step > self._first_step + 1:  # the first step pays one-off costs: not timed
            self._recent.append(now - self._step_began)
            self._timed += 1
        rate = self._step_seconds()
        if self._timed >= self.measure_steps and (
            self._planned_rate is None or abs(rate / self._planned_rate - 1) > self.drift
        ):
            self._plan(args, state, rate)
            if state.global_step >= state.max_steps and not control.should_training_stop:
                # The new plan ends here (the Trainer's flow saw the old one): end as that flow would.
                control.should_training_stop = True
                control.should_save = args.save_strategy != "no"
        if not control.should_training_stop:
            eval_cost = self._eval_cost(rate) if control.should_evaluate else 0.0
            if now + eval_cost + rate > self.deadline:
                # The next step would end past the deadline: stop here, as if the plan ended here. An evaluation
                # that does not fit either is skipped; the checkpoint is saved (the run stays resumable).
                if now + eval_cost > self.deadline:
                    control.should_evaluate = False
                self.stopped_at_deadline = True
                self._set(args, state, state.global_step)
                control.should_training_stop = True
                control.should_save = args.save_strategy != "no"
        self._agree(args, state, control)
        if control.should_training_stop:
            control.should_log = True  # the last step's loss and learning rate reach the log

    def _agree(self, args, state, control) -> None:
        """With several processes, all take the earliest plan and stop together (one alone would hang the rest)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return
        import torch

        # One reduction: the smallest horizon, and (negated) whether any process stops.
        both = torch.tensor([state.max_steps, -int(control.should_training_stop)], dtype=torch.long, device=args.device)
        dist.all_reduce(both, op=dist.ReduceOp.MIN)
        horizon, stop = int(both[0]), bool(both[1])
        if horizon != state.max_steps:
            self._set(args, state, horizon)
        if stop and not control.should_training_stop:
            control.should_training_stop = True
            control.should_save = args.save_strategy != "no"

    def on_evaluate(self, args, state, control, **kwargs):
        self._time_pause("_eval_seconds", args, state, control)

    def on_save(self, args, state, control, **kwargs):
        self._time_pause("_save_seconds", args, state, control)

    def _time_pause(self, attr: str, args, state, control) -> None:
        """Record how long an evaluation or save (``attr``) took; the first one measured changes the plan."""
        now = self.clock()
        first = getattr(self, attr) is None
        setattr(self, attr, now - self._mark)
        self._mark = now
        if first and self._timed >= self.measure_steps and not control.should_training_stop:
            self._replan_between_steps(args, state, control)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and self.planned_steps is not None:
            logs["planned_steps"] = self.planned_steps  # into metrics.jsonl and the progress lines

    def on_train_end(self, args, state, control, **kwargs):
        self.elapsed = self.clock() - self._start

    # ------------------------------------------------------------------ planning

    def report(self) -> dict[str, Any]:
        """What the manifest records about the budget."""
        return {"max_time_seconds": self.seconds, "planned_steps": self.planned_steps, "plans": self.plans,
                "stopped_at_deadline": self.stopped_at_deadline,
                "train_loop_seconds": round(self.elapsed, 2) if self.elapsed is not None else None}

    def _step_seconds(self) -> float:
        if not self._recent:
            return self.estimated_step_seconds or 0.0
        # The mean, not the median: on a shared machine the slow steps are part of the throughput to plan with.
        return statistics.fmean(self._recent)

    def _eval_cost(self, rate: float) -> float:
        if self._eval_seconds is not None:
            return self._eval_seconds
        return self.eval_batches * rate / 2  # forward only: about a third of a training step, with margin

    def _every(self, strategy: Any, steps: int | None) -> int | None:
        strategy = getattr(strategy, "value", strategy)  # transformers' IntervalStrategy / SaveStrategy enums
        if strategy == "steps":
            return steps
        if strategy == "epoch":
            return self._steps_per_epoch or None
        return None

    def _replan_between_steps(self, args, state, control) -> None:
        # An evaluation or checkpoint cost measured for the first time. A plan ending at this step
        # becomes the next one: stopping is decided at a step's end, where processes agree on it.
        self._plan(args, state, self._step_seconds())
        if state.global_step >= state.max_steps:
            self._set(args, state, state.global_step + 1)

    def _plan(self, args, state, rate: float) -> None:
        # One step of margin: a plan that ends a step early keeps its schedule; one that ends late is cut
        # off at the deadline with the learning rate still up.
        remaining = self.deadline - self.clock() - rate
        more = steps_that_fit(
            remaining, rate,
            eval_every=self._every(args.eval_strategy, state.eval_steps), eval_seconds=self._eval_cost(rate),
            save_every=self._every(args.save_strategy, state.save_steps),
            save_seconds=self._save_seconds if self._save_seconds is not None else rate,
        )
        self._planned_rate = rate
        self._set(args, state, state.global_step + more)

    def _set(self, args, state, horizon: int) -> None:
        if self.upper_bound is not None:
            horizon = min(horizon, self.upper_bound)
        horizon = max(horizon, state.global_step, 1)  # at least one step; never behind the current one
        self.plans += horizon != self.planned_steps
        self.planned_steps = horizon
        state.max_steps = horizon
        retarget_schedule(self._scheduler, args, horizon)
