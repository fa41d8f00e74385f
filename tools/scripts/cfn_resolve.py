#!/usr/bin/env python3
"""Resolves a CloudFormation template for given parameters, as CloudFormation would deploy it.

    python3 tools/scripts/cfn_resolve.py TEMPLATE [--param NAME=VALUE]... [--ref LOGICAL=VALUE]...
                                 [--attr LOGICAL.ATTR=VALUE]... [--account ID] [--region R]

Prints JSON: {"Conditions": {name: bool}, "Resources": {logical id: {"Type", "Properties"}},
"Outputs": {name: value}}, with every intrinsic function evaluated and AWS::NoValue removed;
resources and outputs whose Condition is false are left out. What only a deployment knows (a
resource's physical name, `Ref`, and attributes, `Fn::GetAtt`) comes from --ref and --attr;
a `Ref` or `Fn::GetAtt` not given, or an unknown parameter, is an error, so nothing is guessed.
CommaDelimitedList parameters are split on commas; pseudo parameters are AWS::AccountId,
AWS::Region, AWS::Partition (aws), AWS::URLSuffix (amazonaws.com) and AWS::StackName (stack).

Why: tools/bidctl/tests/deploy_policies.rs loads the bucket, key and IAM policies straight from
deploy/*.yaml and enforces them in the local S3 and the KMS emulator. The YAML (with
CloudFormation's short-form tags, !Sub, !If, ...) is read by cfn-lint's own decoder
(cfnlint.decode.cfn_yaml, the maintained parser tools/scripts/lint-deploy.sh already uses); cfn-lint
has no public API that evaluates intrinsic functions for chosen parameters, so that part, a
small fixed set of functions, is here.
"""

import argparse
import base64
import json
import re
import sys

from cfnlint.decode import cfn_yaml


class Unresolved(Exception):
    pass


NO_VALUE = object()


class Resolver:
    def __init__(self, template, params, refs, attrs, pseudo):
        self.t = template
        self.refs = refs
        self.attrs = attrs
        self.values = dict(pseudo)
        for name, spec in (template.get("Parameters") or {}).items():
            if name in params:
                v = params[name]
            elif "Default" in spec:
                v = str(spec["Default"])
            else:
                raise Unresolved(f"parameter {name} has no value and no default")
            if spec.get("Type") == "CommaDelimitedList":
                v = [x.strip() for x in v.split(",")] if v != "" else [""]
            self.values[name] = v
        unknown = set(params) - set(template.get("Parameters") or {})
        if unknown:
            raise Unresolved(f"unknown parameters: {sorted(unknown)}")
        self.conditions = {}
        for name in template.get("Conditions") or {}:
            self.condition(name)

    def condition(self, name):
        if name not in self.conditions:
            expr = (self.t.get("Conditions") or {}).get(name)
            if expr is None:
                raise Unresolved(f"no condition {name}")
            self.conditions[name] = bool(self.eval(expr))
        return self.conditions[name]

    def ref(self, name):
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.values:
            return self.values[name]
        if name in self.refs:
            return self.refs[name]
        raise Unresolved(f"Ref {name}: give --ref {name}=VALUE")

    def getatt(self, logical, attr):
        key = f"{logical}.{attr}"
        if key in self.attrs:
            return self.attrs[key]
        raise Unresolved(f"Fn::GetAtt {key}: give --attr {key}=VALUE")

    def sub(self, text, variables):
        def one(m):
            inner = m.group(1)
            if inner.startswith("!"):
                return "${" + inner[1:] + "}"
            if inner in variables:
                v = variables[inner]
            elif "." in inner and inner.split(".", 1)[0] in (self.t.get("Resources") or {}):
                v = self.getatt(*inner.split(".", 1))
            else:
                v = self.ref(inner)
            if not isinstance(v, str):
                raise Unresolved(f"Fn::Sub ${{{inner}}} is not a string: {v!r}")
            return v

        return re.sub(r"\$\{([^}]+)\}", one, text)

    def eval(self, node):
        if isinstance(node, dict):
            if len(node) == 1:
                (k, v), = node.items()
                if k == "Ref":
                    return self.ref(v)
                if k == "Condition":
                    return self.condition(v)
                if k == "Fn::GetAtt":
                    parts = v.split(".", 1) if isinstance(v, str) else v
                    return self.getatt(parts[0], parts[1])
                if k == "Fn::Sub":
                    if isinstance(v, str):
                        return self.sub(v, {})
                    text, variables = v
                    return self.sub(text, {n: self.eval(x) for n, x in variables.items()})
                if k == "Fn::Join":
                    sep, items = v
                    items = self.eval(items)
                    return sep.join(str(i) for i in items if i is not NO_VALUE)
                if k == "Fn::Split":
                    sep, text = v
                    return self.eval(text).split(sep)
                if k == "Fn::Select":
                    i, items = v
                    return self.eval(items)[int(self.eval(i))]
                if k == "Fn::If":
                    name, yes, no = v
                    return self.eval(yes if self.condition(name) else no)
                if k == "Fn::Equals":
                    a, b = (self.eval(x) for x in v)
                    return a == b
                if k == "Fn::Not":
                    return not self.eval(v[0])
                if k == "Fn::And":
                    return all(self.eval(x) for x in v)
                if k == "Fn::Or":
                    return any(self.eval(x) for x in v)
                if k == "Fn::Base64":
                    return base64.b64encode(self.eval(v).encode()).decode()
                if k.startswith("Fn::"):
                    raise Unresolved(f"{k} is not supported here")
            out = {}
            for k, v in node.items():
                r = self.eval(v)
                if r is not NO_VALUE:
                    out[str(k)] = r
            return out
        if isinstance(node, list):
            return [r for r in (self.eval(x) for x in node) if r is not NO_VALUE]
        if isinstance(node, str):
            return str(node)
        return node

    def resolve(self):
        out = {"Conditions": self.conditions, "Resources": {}, "Outputs": {}}
        for name, res in (self.t.get("Resources") or {}).items():
            if "Condition" in res and not self.condition(res["Condition"]):
                continue
            out["Resources"][name] = {
                "Type": res["Type"],
                "Properties": self.eval(res.get("Properties") or {}),
            }
        for name, o in (self.t.get("Outputs") or {}).items():
            if "Condition" in o and not self.condition(o["Condition"]):
                continue
            out["Outputs"][name] = self.eval(o["Value"])
        return out


def pairs(items, what):
    out = {}
    for item in items or []:
        if "=" not in item:
            sys.exit(f"cfn_resolve: {what} `{item}` is not NAME=VALUE")
        k, v = item.split("=", 1)
        out[k] = v
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("template")
    ap.add_argument("--param", action="append")
    ap.add_argument("--ref", action="append")
    ap.add_argument("--attr", action="append")
    ap.add_argument("--account", default="123456789012")
    ap.add_argument("--region", default="us-east-1")
    a = ap.parse_args()
    template = cfn_yaml.load(a.template)
    pseudo = {
        "AWS::AccountId": a.account,
        "AWS::Region": a.region,
        "AWS::Partition": "aws",
        "AWS::URLSuffix": "amazonaws.com",
        "AWS::StackName": "stack",
    }
    try:
        r = Resolver(template, pairs(a.param, "--param"), pairs(a.ref, "--ref"),
                     pairs(a.attr, "--attr"), pseudo)
        print(json.dumps(r.resolve(), indent=1, sort_keys=True))
    except Unresolved as e:
        sys.exit(f"cfn_resolve: {a.template}: {e}")


if __name__ == "__main__":
    main()
