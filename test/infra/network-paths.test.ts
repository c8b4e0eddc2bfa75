/**
 * Every packet path of the relay tier, walked through the synthesised template the way the VPC
 * would evaluate it: internet → NLB security group ingress (listener port) → NLB security group
 * egress → task security group ingress (target port), the health check (NLB egress → task ingress
 * on the health port; NLB health checks obey outbound rules only) and the peer port between
 * relay tasks. Then the converse: no rule opens anything these paths do not need.
 *
 * Rules are read from both places CloudFormation takes them: inline on AWS::EC2::SecurityGroup
 * and as separate AWS::EC2::SecurityGroupIngress/Egress resources; group ids are resolved
 * through Ref and Fn::GetAtt … GroupId.
 */
import { Template } from 'aws-cdk-lib/assertions';
import { describe, expect, it } from 'vitest';
import { RELAY_PORTS } from '../../infra/constructs/relay-service.js';
import { synthApp } from './cdk-app.js';

const CERT = 'arn:aws:acm:us-east-1:123456789012:certificate/11111111-2222-3333-4444-555555555555';

type Json = Record<string, unknown>;
type CfnTemplate = { Resources: Record<string, { Type: string; Properties?: Json }> };

/** A peer of a rule: a CIDR, or a security group (by logical id). */
type Peer = { cidr: string } | { sg: string };
interface Rule {
  sg: string;
  direction: 'in' | 'out';
  peer: Peer;
  protocol: string;
  from: number;
  to: number;
}

const INTERNET4 = '0.0.0.0/0';
const INTERNET6 = '::/0';

/** The logical id a group-id expression names (Ref X or Fn::GetAtt [X, GroupId]). */
function sgId(expr: unknown): string {
  const e = expr as Json;
  if (typeof e?.Ref === 'string') return e.Ref;
  const getAtt = e?.['Fn::GetAtt'] as [string, string] | undefined;
  if (getAtt && getAtt[1] === 'GroupId') return getAtt[0];
  throw new Error(`unresolvable security group reference: ${JSON.stringify(expr)}`);
}

function ruleOf(sg: string, direction: 'in' | 'out', r: Json): Rule {
  const protocol = String(r.IpProtocol);
  const all = protocol === '-1';
  const from = all ? 0 : Number(r.FromPort);
  const to = all ? 65535 : Number(r.ToPort);
  let peer: Peer;
  if (typeof r.CidrIp === 'string') peer = { cidr: r.CidrIp };
  else if (typeof r.CidrIpv6 === 'string') peer = { cidr: r.CidrIpv6 };
  else if (r.SourceSecurityGroupId !== undefined) peer = { sg: sgId(r.SourceSecurityGroupId) };
  else if (r.DestinationSecurityGroupId !== undefined) peer = { sg: sgId(r.DestinationSecurityGroupId) };
  else if (r.SourcePrefixListId !== undefined || r.DestinationPrefixListId !== undefined)
    peer = { cidr: `prefix-list:${JSON.stringify(r.SourcePrefixListId ?? r.DestinationPrefixListId)}` };
  else throw new Error(`rule without a peer: ${JSON.stringify(r)}`);
  return { sg, direction, peer, protocol, from, to };
}

/** Every rule of every security group in the template. */
function rulesOf(t: CfnTemplate): { rules: Rule[]; groups: string[] } {
  const rules: Rule[] = [];
  const groups: string[] = [];
  for (const [id, res] of Object.entries(t.Resources)) {
    const p = res.Properties ?? {};
    if (res.Type === 'AWS::EC2::SecurityGroup') {
      groups.push(id);
      for (const r of (p.SecurityGroupIngress as Json[]) ?? []) rules.push(ruleOf(id, 'in', r));
      for (const r of (p.SecurityGroupEgress as Json[]) ?? []) rules.push(ruleOf(id, 'out', r));
    }
    if (res.Type === 'AWS::EC2::SecurityGroupIngress') rules.push(ruleOf(sgId(p.GroupId), 'in', p));
    if (res.Type === 'AWS::EC2::SecurityGroupEgress') rules.push(ruleOf(sgId(p.GroupId), 'out', p));
  }
  // EC2 gives a new group an "all traffic out" rule, which CloudFormation strips as soon as the
  // group gets any egress rule of its own (inline or a separate resource): model exactly that.
  for (const g of groups)
    if (!rules.some((r) => r.sg === g && r.direction === 'out'))
      rules.push({ sg: g, direction: 'out', peer: { cidr: INTERNET4 }, protocol: '-1', from: 0, to: 65535 });
  return { rules, groups };
}

const samePeer = (a: Peer, b: Peer) =>
  'cidr' in a ? 'cidr' in b && a.cidr === b.cidr : 'sg' in b && a.sg === b.sg;

/** True when some rule of `sg` in `direction` admits TCP `port` from/to `peer`. */
function admits(rules: Rule[], sg: string, direction: 'in' | 'out', peer: Peer, port: number): boolean {
  return rules.some(
    (r) =>
      r.sg === sg &&
      r.direction === direction &&
      (r.protocol === 'tcp' || r.protocol === '6' || r.protocol === '-1') &&
      r.from <= port &&
      port <= r.to &&
      samePeer(r.peer, peer),
  );
}

interface Path {
  listenerPort: number;
  targetPort: number;
  healthPort: number;
}

/** The NLB, its security groups, the task security groups and every listener's path. */
function topology(t: CfnTemplate) {
  const entries = Object.entries(t.Resources);
  const lbs = entries.filter(([, r]) => r.Type === 'AWS::ElasticLoadBalancingV2::LoadBalancer');
  expect(lbs.length).toBe(1);
  const lb = (lbs[0] as (typeof lbs)[number])[1].Properties ?? {};
  const nlbGroups = ((lb.SecurityGroups as unknown[]) ?? []).map(sgId);
  const dualStack = lb.IpAddressType === 'dualstack';
  const services = entries.filter(([, r]) => r.Type === 'AWS::ECS::Service');
  expect(services.length).toBe(1);
  const svc = (services[0] as (typeof services)[number])[1].Properties as {
    NetworkConfiguration: { AwsvpcConfiguration: { SecurityGroups: unknown[] } };
  };
  const taskGroups = svc.NetworkConfiguration.AwsvpcConfiguration.SecurityGroups.map(sgId);
  const paths: Path[] = entries
    .filter(([, r]) => r.Type === 'AWS::ElasticLoadBalancingV2::Listener')
    .map(([, r]) => {
      const p = r.Properties as { Port: number; DefaultActions: Array<{ TargetGroupArn: unknown }> };
      const tgId = (p.DefaultActions[0] as { TargetGroupArn: Json }).TargetGroupArn.Ref as string;
      const tg = t.Resources[tgId]?.Properties as { Port: number; HealthCheckPort: string };
      return { listenerPort: p.Port, targetPort: tg.Port, healthPort: Number(tg.HealthCheckPort) };
    });
  return { nlbGroups, taskGroups, dualStack, paths };
}

function synthTemplates(context: Record<string, unknown>): CfnTemplate[] {
  return synthApp(context)
    .stacks.filter((s) => s.relay !== undefined)
    .map((s) => Template.fromStack(s).toJSON() as CfnTemplate);
}

describe.each([
  ['one region, no certificate', { regions: 'us-east-1' }],
  [
    'with a certificate and domain (TLS listeners)',
    { regions: 'us-east-1', certificateArn: CERT, relayDomain: 'relay.{region}.example.com' },
  ],
])('relay packet paths: %s', (_name, context) => {
  const [template] = synthTemplates(context);
  const t = template as CfnTemplate;
  const { rules, groups } = rulesOf(t);
  const { nlbGroups, taskGroups, dualStack, paths } = topology(t);
  const anyAdmits = (gs: string[], direction: 'in' | 'out', peer: Peer, port: number) =>
    gs.some((g) => admits(rules, g, direction, peer, port));
  const between = (port: number) =>
    nlbGroups.some((n) =>
      taskGroups.some(
        (g) => admits(rules, n, 'out', { sg: g }, port) && admits(rules, g, 'in', { sg: n }, port),
      ),
    );

  it('the NLB has its own security group, and the tasks theirs', () => {
    expect(nlbGroups.length).toBeGreaterThan(0);
    expect(taskGroups.length).toBeGreaterThan(0);
    expect(paths.length).toBeGreaterThan(0);
  });

  it('internet → NLB: every listener port is admitted from any IPv4 (and IPv6 when dual-stack) source', () => {
    for (const p of paths) {
      expect(
        anyAdmits(nlbGroups, 'in', { cidr: INTERNET4 }, p.listenerPort),
        `listener ${p.listenerPort}`,
      ).toBe(true);
      if (dualStack) expect(anyAdmits(nlbGroups, 'in', { cidr: INTERNET6 }, p.listenerPort)).toBe(true);
    }
  });

  it('NLB → task: every target port and its health port (NLB egress and task ingress both)', () => {
    for (const p of paths) {
      expect(between(p.targetPort), `target ${p.listenerPort}→${p.targetPort}`).toBe(true);
      expect(between(p.healthPort), `health ${p.healthPort}`).toBe(true);
    }
  });

  it('task → task: the peer port, between relay tasks only', () => {
    expect(
      taskGroups.some(
        (g) =>
          admits(rules, g, 'out', { sg: g }, RELAY_PORTS.peer) ||
          admits(rules, g, 'out', { cidr: INTERNET4 }, RELAY_PORTS.peer),
      ),
    ).toBe(true);
    expect(taskGroups.some((g) => admits(rules, g, 'in', { sg: g }, RELAY_PORTS.peer))).toBe(true);
  });

  it('nothing else: NLB ingress is exactly the listener ports from the internet', () => {
    const expected = new Set(paths.map((p) => p.listenerPort));
    const ingress = rules.filter((r) => nlbGroups.includes(r.sg) && r.direction === 'in');
    for (const r of ingress) {
      expect(r.protocol, JSON.stringify(r)).toBe('tcp');
      expect(r.from, JSON.stringify(r)).toBe(r.to);
      expect(expected.has(r.from), JSON.stringify(r)).toBe(true);
      expect('cidr' in r.peer && [INTERNET4, INTERNET6].includes(r.peer.cidr), JSON.stringify(r)).toBe(true);
    }
  });

  it('nothing else: NLB egress reaches only the task group, on target and health ports', () => {
    const allowed = new Set(paths.flatMap((p) => [p.targetPort, p.healthPort]));
    const egress = rules.filter((r) => nlbGroups.includes(r.sg) && r.direction === 'out');
    expect(egress.length).toBeGreaterThan(0);
    for (const r of egress) {
      expect('sg' in r.peer && taskGroups.includes(r.peer.sg), JSON.stringify(r)).toBe(true);
      expect(r.protocol, JSON.stringify(r)).toBe('tcp');
      expect(r.from === r.to && allowed.has(r.from), JSON.stringify(r)).toBe(true);
    }
  });

  it('nothing else: the tasks admit target and health ports from the NLB group only, the peer port from themselves only', () => {
    const fromNlb = new Set(paths.flatMap((p) => [p.targetPort, p.healthPort]));
    const ingress = rules.filter((r) => taskGroups.includes(r.sg) && r.direction === 'in');
    for (const r of ingress) {
      expect(r.protocol, JSON.stringify(r)).toBe('tcp');
      expect(r.from, JSON.stringify(r)).toBe(r.to);
      expect('sg' in r.peer, `no CIDR reaches a task directly: ${JSON.stringify(r)}`).toBe(true);
      const peer = (r.peer as { sg: string }).sg;
      if (r.from === RELAY_PORTS.peer) expect(taskGroups).toContain(peer);
      else {
        expect(nlbGroups, JSON.stringify(r)).toContain(peer);
        expect(fromNlb.has(r.from), JSON.stringify(r)).toBe(true);
      }
    }
    // The peer port is not among the NLB's: no listener can reach it.
    expect(paths.some((p) => p.targetPort === RELAY_PORTS.peer)).toBe(false);
  });

  it('nothing else: no other security group in the stack admits anything from the internet', () => {
    const others = groups.filter((g) => !nlbGroups.includes(g));
    for (const r of rules.filter((x) => others.includes(x.sg) && x.direction === 'in'))
      expect('cidr' in r.peer && [INTERNET4, INTERNET6].includes(r.peer.cidr), JSON.stringify(r)).toBe(false);
  });
});
