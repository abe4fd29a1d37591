"""The three hooks a cnnbench plugin can implement.

Each hook receives a ``register`` callback (the style of simonw's ``llm``), so one plugin module can
add any number of backbones, data sets or heads, each built lazily on first use::

    from cnnbench import hookimpl
    from cnnbench.backbone import BackboneOptions

    @hookimpl
    def register_backbones(register):
        register("my-net", build_my_net, options=BackboneOptions,
                 description="what it is, where its weights come from")

``register(name, factory, *, description="", prefix=False, options=None)``: ``options`` is the
plugin's :class:`cnnbench.options.Options` class (a backbone's is
:class:`cnnbench.backbone.BackboneOptions` or a subclass; a class factory's own ``Options``
attribute is found without it); the given options are checked against it and the factory
receives them parsed, ``factory(options=<Options>)``. With ``prefix=True`` the name is a family
prefix such as ``"timm:"`` and ``factory(rest, options=…)`` receives what follows it
(``timm:resnet50`` -> ``factory("resnet50", …)``). A factory without declared options is called
``factory(**options)``, its signature checking them.
"""

import pluggy

hookspec = pluggy.HookspecMarker("cnnbench")
hookimpl = pluggy.HookimplMarker("cnnbench")


@hookspec
def register_backbones(register):
    """Register backbones: factories returning :class:`cnnbench.backbone.Backbone`."""


@hookspec
def register_datasets(register):
    """Register data sets: factories returning :class:`cnnbench.dataset.Dataset`."""


@hookspec
def register_heads(register):
    """Register heads: factories returning :class:`cnnbench.head.Head`."""
