"""The spiking IR: typed graph data (`Node`, `Graph`), its op table, serialisation and listing."""

from snncc.ir.graph import Graph, Node
from snncc.ir.ops import CURRENT, OPS, SPIKE

__all__ = ["Graph", "Node", "OPS", "SPIKE", "CURRENT"]
