// Reading template.yaml (with CloudFormation's short-form tags) and bringing it and a
// synthesized CDK template to one comparable form: parameters resolved to the values a
// test chose, conditions evaluated, each resource reference written as <Name> or
// <Name.Attribute>, where Name is the template's logical id or the construct's id.
import { CfnResource, Stack } from 'aws-cdk-lib';
import { Construct } from 'constructs';
import * as fs from 'fs';
import * as path from 'path';
import { parse, Scalar, YAMLMap, YAMLSeq } from 'yaml';
import type { Tags } from 'yaml';

export const TEMPLATE = path.resolve(__dirname, '..', '..', '..', '..', 'template.yaml');

export type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any

const FUNCTIONS = [
  'Base64',
  'Cidr',
  'FindInMap',
  'GetAZs',
  'ImportValue',
  'Join',
  'Select',
  'Split',
  'Sub',
  'If',
  'Not',
  'Equals',
  'And',
  'Or',
  'Transform',
];

function cfnTags(): Tags {
  const tags: Tags = [];
  const wrap = (name: string, value: Json): Json => {
    if (name === 'Ref') return { Ref: value };
    if (name === 'Condition') return { Condition: value };
    if (name === 'GetAtt') return { 'Fn::GetAtt': typeof value === 'string' ? value.split('.', 2) : value };
    return { [`Fn::${name}`]: value };
  };
  for (const name of ['Ref', 'Condition', 'GetAtt', ...FUNCTIONS]) {
    tags.push({ tag: `!${name}`, resolve: (value: string) => wrap(name, value) });
    tags.push({
      tag: `!${name}`,
      collection: 'seq',
      resolve: (seq) => new Scalar(wrap(name, (seq as YAMLSeq).toJSON())),
    });
    tags.push({
      tag: `!${name}`,
      collection: 'map',
      resolve: (map) => new Scalar(wrap(name, (map as YAMLMap).toJSON())),
    });
  }
  return tags;
}

export function loadTemplate(file = TEMPLATE): Json {
  return parse(fs.readFileSync(file, 'utf8'), { customTags: cfnTags() });
}

const isObject = (v: Json): v is Record<string, Json> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * The SAM template with intrinsics resolved: `params` gives each parameter's value (a
 * missing one takes its Default), references to resources become <Name>/<Name.Attr>,
 * pseudo parameters <AWS::X>; `AWS::NoValue` removes its key or item.
 */
export function resolveSam(t: Json, params: Record<string, Json>): (node: Json) => Json {
  const NO_VALUE = Symbol('NoValue');
  const param = (name: string): Json => {
    if (name in params) return params[name];
    const p = t.Parameters?.[name];
    if (p === undefined) return undefined;
    if (!('Default' in p)) throw new Error(`parameter ${name} has no default: give it a value`);
    return p.Default;
  };
  const ref = (name: string): Json => {
    if (name === 'AWS::NoValue') return NO_VALUE;
    if (name.startsWith('AWS::')) return `<${name}>`;
    const value = param(name);
    if (value !== undefined) return value;
    if (name in t.Resources) return `<${name}>`;
    throw new Error(`Ref to unknown ${name}`);
  };
  const condition = (name: string): boolean => Boolean(resolve(t.Conditions[name]));
  const resolve = (node: Json): Json => {
    if (Array.isArray(node)) return node.map(resolve).filter((v) => v !== NO_VALUE);
    if (!isObject(node)) return node;
    const keys = Object.keys(node);
    if (keys.length === 1) {
      const [k] = keys;
      const v = node[k];
      switch (k) {
        case 'Ref':
          return ref(v);
        case 'Condition':
          return condition(v);
        case 'Fn::GetAtt':
          return `<${v[0]}.${v[1]}>`;
        case 'Fn::If':
          return resolve(condition(v[0]) ? v[1] : v[2]);
        case 'Fn::Not':
          return !resolve(v[0]);
        case 'Fn::Equals':
          return String(resolve(v[0])) === String(resolve(v[1]));
        case 'Fn::FindInMap': {
          const [map, top, second] = v.map(resolve);
          return t.Mappings[map][String(top)][second];
        }
        case 'Fn::Sub': {
          const [text, vars] = typeof v === 'string' ? [v, {}] : v;
          return text.replace(/\$\{([^}!]+)\}/g, (_: string, name: string) => {
            if (name in vars) return String(resolve(vars[name]));
            if (name.includes('.')) {
              const [res, attr] = name.split('.', 2);
              return `<${res}.${attr}>`;
            }
            return String(ref(name));
          });
        }
        default:
          if (k.startsWith('Fn::')) throw new Error(`not resolved here: ${k}`);
      }
    }
    const out: Record<string, Json> = {};
    for (const [k, v] of Object.entries(node)) {
      const r = resolve(v);
      if (r !== NO_VALUE) out[k] = r;
    }
    return out;
  };
  return resolve;
}

/**
 * The names of a construct's CloudFormation resources: the id of the construct that owns
 * each as its `Resource` (an L2), or the L1's own id, by logical id.
 */
export function resourceNames(root: Construct): Record<string, string> {
  const names: Record<string, string> = {};
  const stack = Stack.of(root);
  for (const c of root.node.findAll()) {
    if (!(c instanceof CfnResource)) continue;
    const parts = c.node.path.slice(root.node.path.length + 1).split('/');
    const logicalId = stack.resolve(c.logicalId) as string;
    if (parts.length === 2 && parts[1] === 'Resource') names[logicalId] = parts[0];
    else if (parts.length === 1) names[logicalId] = parts[0];
  }
  return names;
}

/**
 * A synthesized template's node with each reference to a named resource written as
 * <Name>/<Name.Attr>, pseudo parameters as <AWS::X>, and Fn::Join of strings joined.
 */
export function resolveCdk(names: Record<string, string>): (node: Json) => Json {
  const name = (logicalId: string) => names[logicalId] ?? logicalId;
  const resolve = (node: Json): Json => {
    if (Array.isArray(node)) return node.map(resolve);
    if (!isObject(node)) return node;
    const keys = Object.keys(node);
    if (keys.length === 1) {
      const [k] = keys;
      const v = node[k];
      if (k === 'Ref') return `<${v.startsWith('AWS::') ? v : name(v)}>`;
      if (k === 'Fn::GetAtt') return `<${name(v[0])}.${v[1]}>`;
      if (k === 'Fn::Join') {
        const parts = v[1].map(resolve);
        if (parts.every((x: Json) => typeof x === 'string' || typeof x === 'number')) return parts.join(v[0]);
        return { 'Fn::Join': [v[0], parts] };
      }
    }
    const out: Record<string, Json> = {};
    for (const [k, v] of Object.entries(node)) out[k] = resolve(v);
    return out;
  };
  return resolve;
}
