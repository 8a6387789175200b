"""Ray's ways of reporting a failed start, each reduced to one readable line (no Ray cluster:
the exceptions are Ray's own classes, built with the texts Ray 2.60 gives them)."""

from __future__ import annotations

import pickle

from ray.core.generated.common_pb2 import ActorDiedErrorContext
from ray.exceptions import ActorDiedError, ActorUnavailableError, RaySystemError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from herd.supervisors.errors import StartChildError
from herd.supervisors.otp.start_failure import (
    describe,
    last_exception,
    one_line,
    placement_of,
    timed_out,
)

ANSI_HEADER = ("\x1b[36mray::Boom.__init__()\x1b[39m (pid=12867, ip=127.0.0.1, "
               "actor_id=7cabab6315bdb6cf8ce1e91501000000, repr=<default_worker.Boom object>)")
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/work/main/supervisors/otp/harness.py", line 105, in __init__\n'
    "    user_cls.__init__(self, *args, **kwargs)\n"
    "    ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
    '  File "/tmp/app.py", line 9, in __init__\n'
    '    raise ValueError("boom in ctor")\n'
    "ValueError: boom in ctor\n")


def task_error(cause: BaseException, traceback_str: str = TRACEBACK) -> RayTaskError:
    return RayTaskError("Boom.__init__", traceback_str, cause, proctitle="ray::Boom", pid=1,
                        ip="127.0.0.1")


def assert_readable(text: str) -> None:
    assert "\n" not in text and "\x1b" not in text and "^^^" not in text, text


def test_one_line_drops_colour_codes_and_marker_lines() -> None:
    text = one_line(ANSI_HEADER + "\n" + TRACEBACK)
    assert_readable(text)
    assert text.startswith("ray::Boom.__init__() (pid=12867")
    assert text.endswith("ValueError: boom in ctor")
    assert len(one_line("x" * 2000)) == 500


def test_last_exception_is_the_line_that_ends_the_traceback() -> None:
    assert last_exception(ANSI_HEADER + "\n" + TRACEBACK) == "ValueError: boom in ctor"
    assert last_exception("mod.sub.CustomError: it broke\n\n") == "mod.sub.CustomError: it broke"
    assert last_exception("KeyError\n") == "KeyError"


def test_constructor_error_reported_by_the_harness_keeps_its_cause() -> None:
    original = ValueError("boom in ctor")
    harness_error = StartChildError("its constructor raised ValueError: boom in ctor")
    harness_error.__cause__ = original
    # Ray makes the wrapper an instance of the wrapped error's class too.
    wrapped = task_error(harness_error).as_instanceof_cause()
    assert isinstance(wrapped, StartChildError)
    why, cause = describe(wrapped)
    assert why == "its constructor raised ValueError: boom in ctor"
    assert cause is original


def test_constructor_error_of_a_class_without_the_harness() -> None:
    died = ActorDiedError(task_error(ValueError("boom in ctor")))
    why, cause = describe(died)
    assert why == "its constructor raised ValueError: boom in ctor"
    assert cause is None


def test_class_that_the_node_cannot_import() -> None:
    text = ("The actor with name Hidden failed to import on the worker. This may be because "
            "needed library dependencies are not installed in the worker environment:\n\n"
            "Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
            "ModuleNotFoundError: No module named 'driveronly_mod'\n")
    died = ActorDiedError(task_error(RuntimeError(text), traceback_str=text))
    why, _ = describe(died)
    assert_readable(why)
    assert why == ("its class cannot be imported on the node Ray placed it on: "
                   "ModuleNotFoundError: No module named 'driveronly_mod'")


def test_arguments_ray_could_not_deserialize() -> None:
    system = RaySystemError("No module named 'driveronly_mod'", TRACEBACK.replace(
        "ValueError: boom in ctor", "ModuleNotFoundError: No module named 'driveronly_mod'"))
    why, _ = describe(task_error(system).as_instanceof_cause())
    assert why == ("Ray could not deserialize what it was sent: "
                   "ModuleNotFoundError: No module named 'driveronly_mod'")


def test_process_or_node_died_before_ready() -> None:
    context = ActorDiedErrorContext(
        class_name="Boom", actor_id=bytes(16), pid=42, node_ip_address="127.0.0.1",
        error_message="The actor is dead because its node has died. Node Id: abc")
    why, _ = describe(ActorDiedError(context))
    assert why == ("its process died before it was ready: The actor is dead because its node "
                   "has died. Node Id: abc")
    why, _ = describe(ActorUnavailableError("unreachable", b"\x00" * 16))
    assert why == "its node became unreachable before it was ready"


def test_any_other_error_while_creating_the_actor() -> None:
    original = TypeError("cannot pickle '_thread.lock' object")
    why, cause = describe(original)
    assert why == "TypeError: cannot pickle '_thread.lock' object"
    assert cause is original


def test_timeouts_say_whether_it_was_placed() -> None:
    options = {"num_cpus": 64, "resources": {"gpu_box": 1},
               "scheduling_strategy": NodeAffinitySchedulingStrategy("ab" * 28, soft=False)}
    assert timed_out(2.0, "PENDING_CREATION", options) == (
        "was not placed within 2.0 s: no alive node has free what it asks for (num_cpus=64, "
        "resources={'gpu_box': 1}, scheduling_strategy=node abababababab)")
    assert timed_out(2.0, "ALIVE", {}) == "did not finish its constructor within 2.0 s"
    assert "did not start within 2.0 s" in timed_out(2.0, None, {})
    assert placement_of({}) == "num_cpus=1 (Ray's default to place an actor)"


def test_start_child_error_keeps_a_cause_that_pickles() -> None:
    error = StartChildError("child 'c' failed to start: its constructor raised ValueError: x")
    error.__cause__ = ValueError("x")
    back = pickle.loads(pickle.dumps(error))
    assert str(back) == str(error)
    assert isinstance(back.__cause__, ValueError) and back.__suppress_context__

    class Unpicklable(Exception):
        def __reduce__(self) -> tuple[object, ...]:
            raise TypeError("no")

    error.__cause__ = Unpicklable()
    assert pickle.loads(pickle.dumps(error)).__cause__ is None
