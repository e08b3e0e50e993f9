"""Synthetic models for tests and benchmarks: flat, chain and fan-out
architectures of sim components, as YAML domain documents."""

from __future__ import annotations

from collections.abc import Mapping


def _params(parameters: Mapping[str, object]) -> str:
    if not parameters:
        return '""'
    lines = "".join(f"\n                  {key}: {value}" for key, value in parameters.items())
    return "|" + lines


def component(name: str, version: str = "V1", depends_on: str = "", kind: str = "context") -> str:
    deps = "{}"
    if depends_on:
        deps = f"""
          up:
            Dependency: up
            Type: {kind}
            Component: {depends_on}
            Version: {version}
            Configuration: \"\""""
    return f"""
      {name} - {version}:
        Component: {name}
        Version: {version}
        Controller: sim
        Configuration: "{name} {{{{element}}}} {{{{cluster}}}}"
        Dependencies: {deps}"""


def element(name: str, comp: str, size: int, version: str = "V1", provider: str = "", kind: str = "context",
            parameters: Mapping[str, object] | None = None, minimum: int | None = None, maximum: int | None = None) -> str:
    rels = "{}"
    if provider:
        rels = f"""
                  up:
                    Relationship: up
                    Dependency: up
                    Type: {kind}
                    Element: {provider}
                    Version: {version}
                    Configuration: \"\""""
    return f"""
          {name}:
            Element: {name}
            Component: {comp}
            Configuration: ""
            Clusters:
              {version}:
                Version: {version}
                State: active
                Min: {minimum if minimum is not None else min(size, 1)}
                Max: {maximum if maximum is not None else max(size, 1)}
                Size: {size}
                Configuration: {_params(parameters or {})}
                Relationships: {rels}"""


def domain(name: str, components: list[str], architecture: str, version: str, elements: list[str]) -> str:
    """A domain document with components and one architecture."""
    return f"""Name: {name}
Components:{"".join(components)}
Architectures:
  {architecture} - {version}:
    Architecture: {architecture}
    Version: {version}
    Configuration: ""
    Elements:{"".join(elements)}
"""


def chain(name: str, sizes: list[int], parameters: Mapping[str, object] | None = None, kind: str = "context",
          architecture: str = "app", version: str = "V1") -> str:
    """Elements e0 <- e1 <- ... each depending on the previous one."""
    components = [component(f"c{i}", depends_on=f"c{i - 1}" if i else "", kind=kind) for i in range(len(sizes))]
    elements = [element(f"e{i}", f"c{i}", size, provider=f"e{i - 1}" if i else "", kind=kind, parameters=parameters)
                for i, size in enumerate(sizes)]
    return domain(name, components, architecture, version, elements)


def flat(name: str, size: int, parameters: Mapping[str, object] | None = None, elements: int = 1,
         architecture: str = "app", version: str = "V1", maximum: int | None = None) -> str:
    """Independent elements of `size` instances each."""
    return domain(name, [component("c0")], architecture, version,
                  [element(f"e{i}", "c0", size, parameters=parameters, maximum=maximum) for i in range(elements)])


def architecture_only(document: str) -> str:
    """The same domain document without its components (to add a version)."""
    head, tail = document.split("Components:", 1)
    return head + "Architectures:" + tail.split("Architectures:", 1)[1]


def fan_out(name: str, root_size: int, leaves: int, leaf_size: int, parameters: Mapping[str, object] | None = None,
            architecture: str = "app", version: str = "V1") -> str:
    """One root element and `leaves` elements that depend on it."""
    components = [component("root"), component("leaf", depends_on="root")]
    elements = [element("root", "root", root_size, parameters=parameters)]
    elements += [element(f"leaf{i}", "leaf", leaf_size, provider="root", parameters=parameters) for i in range(leaves)]
    return domain(name, components, architecture, version, elements)
