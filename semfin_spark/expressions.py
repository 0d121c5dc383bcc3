"""Column expressions built once per Spark session.

Building a PySpark column is a round trip to the JVM for every function, literal and
lambda in it. SemFin's declared-field rules are thousands of them: building the
``model_fields`` expressions took 1.5 to 1.9 s on every flatten, about a sixth of a small
flatten's time (50 models, a warm session). The expressions depend only on the rules and
their arguments, never on the data, so they are built once per ``SparkContext`` and
reused: a column is an immutable expression tree, valid in any DataFrame of its session.
"""

from __future__ import annotations

import functools
import weakref
from typing import Callable, TypeVar

from pyspark import SparkContext

T = TypeVar("T")

_BUILT: "weakref.WeakKeyDictionary[SparkContext, dict]" = weakref.WeakKeyDictionary()


def per_session(build: Callable[..., T]) -> Callable[..., T]:
    """``build`` called once per active ``SparkContext`` and arguments (hashable), its
    result kept while that context lives.

    For builders of columns that read no data and no clock: a column holding
    ``now()`` or a value computed from a table must not be cached. Callers must not
    mutate what they get (a dict of columns is shared).
    """
    @functools.wraps(build)
    def cached(*args):
        context = SparkContext._active_spark_context
        if context is None:  # no session: PySpark will say so when the column is built
            return build(*args)
        built = _BUILT.setdefault(context, {})
        key = (build, args)  # the function itself: two builders may share a name
        if key not in built:
            built[key] = build(*args)
        return built[key]

    return cached
