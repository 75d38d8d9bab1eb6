"""`tillmesh demo --lan`: the demo's site on emulated machines (`site`: a network
namespace per machine, from `replicas.demo.netlab`) and the story told on that network
(`story`: a store's WAN cut, then its LTE, a till's cable, an HQ machine)."""
