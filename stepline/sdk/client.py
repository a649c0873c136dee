"""``Stepline``: the app's client. Defines functions and sends events."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from stepline import errors
from stepline.sdk import events as events_
from stepline.sdk import flow as flow_
from stepline.sdk import function as function_
from stepline.sdk import settings as settings_
from stepline.sdk import tasks as tasks_
from stepline.sdk import triggers as triggers_


class EventSender(Protocol):
    """Where ``client.send`` delivers events: an embedded engine, or a server over HTTP (the default)."""

    async def send_events(self, events: list[dict[str, Any]]) -> list[str]:
        """Store the events (wire form); return their ids in order."""
        ...

    def send_events_sync(self, events: list[dict[str, Any]]) -> list[str]:
        """The same, from a thread that is not running the event loop (sync functions)."""
        ...


class Stepline:
    """``client = stepline.Stepline(app_id="roleready")``; then ``@client.function(...)``.

    The keyword arguments override the ``STEPLINE_*`` environment variables read here, once
    (``stepline.sdk.settings``): ``base_url`` (``STEPLINE_BASE_URL``), ``event_key``,
    ``signing_key``, ``signing_key_fallback`` and ``is_dev`` (``STEPLINE_DEV``).
    """

    def __init__(
        self,
        app_id: str,
        *,
        base_url: str | None = None,
        event_key: str | None = None,
        signing_key: str | None = None,
        signing_key_fallback: str | None = None,
        is_dev: bool | None = None,
    ) -> None:
        self.app_id = function_.validate_id("app", app_id)
        self.settings = settings_.load(
            base_url=base_url,
            event_key=event_key,
            signing_key=signing_key,
            signing_key_fallback=signing_key_fallback,
            is_dev=is_dev,
        )
        self._sender: EventSender | None = None
        self._http_sender: EventSender | None = None
        self._task_backend: tasks_.TaskBackend | None = None
        self._http_task_backend: tasks_.TaskBackend | None = None
        self.tasks = tasks_.TaskClient(self.task_backend)
        """Tracked tasks: ``await client.tasks.enqueue(kind=..., owner=..., event=...)``."""

    def function(
        self,
        *,
        id: str,
        trigger: triggers_.Trigger | None = None,
        triggers: Sequence[triggers_.Trigger] = (),
        retries: int | None = None,
        on_failure: function_.Handler | function_.Function | None = None,
        name: str | None = None,
        concurrency: Sequence[flow_.Concurrency] | None = None,
        throttle: flow_.Throttle | None = None,
        rate_limit: flow_.RateLimit | None = None,
        debounce: flow_.Debounce | None = None,
        batch_events: flow_.Batch | None = None,
        priority: flow_.Priority | None = None,
        cancel_on: Sequence[flow_.CancelOn] | None = None,
        idempotency: str | None = None,
        timeouts: flow_.Timeouts | None = None,
        singleton: flow_.Singleton | None = None,
    ) -> Callable[[function_.Handler], function_.Function]:
        """Declare a durable function. ``retries=N`` allows N retries per step (N+1 attempts; default 4).

        The flow-control options (``concurrency`` ... ``singleton``, see ``stepline.sdk.flow``)
        limit, merge and stop the function's runs; each is checked here.
        """
        function_.validate_id("function", id)
        try:
            flow_options = flow_.options(
                concurrency=concurrency,
                throttle=throttle,
                rate_limit=rate_limit,
                debounce=debounce,
                batch_events=batch_events,
                priority=priority,
                cancel_on=cancel_on,
                idempotency=idempotency,
                timeouts=timeouts,
                singleton=singleton,
            )
        except errors.ConfigurationError as exc:
            raise type(exc)(f"function {id!r}: {exc}") from None
        all_triggers = (trigger, *triggers) if trigger is not None else tuple(triggers)
        for item in all_triggers:
            if not isinstance(item, triggers_.EventTrigger | triggers_.CronTrigger):
                raise errors.ConfigurationError(
                    f"trigger of {id!r} must come from stepline.on_event(...) or stepline.on_cron(...), got {item!r}"
                )
        crons = sum(isinstance(item, triggers_.CronTrigger) for item in all_triggers)
        if crons > 1:  # what the server would refuse at sync, said where the function is written
            raise errors.ConfigurationError(f"function {id!r} has {crons} cron triggers; at most one is supported")
        retry_count = function_.validate_retries(retries)

        def decorate(handler: function_.Handler) -> function_.Function:
            if not callable(handler):
                raise errors.ConfigurationError(f"@client.function(id={id!r}) must decorate a function")
            fn = function_.Function(
                id=id,
                app_id=self.app_id,
                name=name or id,
                handler=handler,
                triggers=all_triggers,
                retries=retry_count,
                is_async=function_.is_async_handler(handler),
                flow=flow_options,
            )
            if on_failure is not None:
                fn = dataclasses.replace(fn, on_failure=function_.make_failure_function(fn, on_failure))
            return fn

        return decorate

    def attach_sender(self, sender: EventSender | None, tasks: tasks_.TaskBackend | None = None) -> None:
        """Route ``send`` to ``sender`` and ``client.tasks`` to ``tasks`` (the embedded engine does
        this when it starts).

        ``None`` goes back to the default: the server at ``settings.base_url``, over HTTP.
        """
        self._sender = sender
        self._task_backend = tasks

    def task_backend(self) -> tasks_.TaskBackend:
        """Where ``client.tasks`` and ``ctx.task`` calls go: the attached engine, else the server."""
        if self._task_backend is not None:
            return self._task_backend
        if self._http_task_backend is None:
            from stepline.sdk import http_tasks  # httpx only for apps that talk to a server

            self._http_task_backend = http_tasks.HttpTaskBackend(self.settings)
        return self._http_task_backend

    async def send(self, events: events_.Event | Sequence[events_.Event]) -> list[str]:
        """Send one event or several; returns their ids."""
        return await self._require_sender().send_events(_to_wire(events))

    def send_sync(self, events: events_.Event | Sequence[events_.Event]) -> list[str]:
        """``send`` for synchronous code running outside the event loop."""
        return self._require_sender().send_events_sync(_to_wire(events))

    def _require_sender(self) -> EventSender:
        if self._sender is not None:
            return self._sender
        if self._http_sender is None:
            from stepline.sdk import http_sender  # httpx only for apps that send over HTTP

            self._http_sender = http_sender.HttpEventSender(self.settings)
        return self._http_sender


def _to_wire(events: events_.Event | Sequence[events_.Event]) -> list[dict[str, Any]]:
    batch = [events] if isinstance(events, events_.Event) else list(events)
    for event in batch:
        if not isinstance(event, events_.Event):
            raise errors.ConfigurationError(f"send() takes stepline.Event objects, got {type(event).__name__}")
        events_.validate_event_name(event.name)
    return [event.to_wire() for event in batch]
