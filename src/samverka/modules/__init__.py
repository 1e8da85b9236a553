"""Replaceable modules: manifests, the module registry and its admin operations.

`manifest` validates a module's manifest (YAML or JSON); `registry` registers, lists, shows,
disables, enables and replaces modules (a SMART backend-services client plus backport Subscription
resources, audited); `store` holds the registry tables; `subscriptions` builds and changes the
Subscription resources and reads their delivery state; `records` builds the module AuditEvents.
Imports auth, audit, interactions and store; never api or cli.
"""
