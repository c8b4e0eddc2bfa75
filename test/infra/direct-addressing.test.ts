/**
 * Direct addressing (`-c relayDirect=true`, off by default): relay tasks get public IPv4s in the
 * public subnets, their security group admits the internet on the generic port only, the relay
 * learns its address (RELAY_DIRECT_HOST=ecs-public-ip, ec2:DescribeNetworkInterfaces) and the
 * lookup function names holders (RENDEZVOUS_LOOKUP_DIRECT=on, Query on park records); the NLB
 * keeps its listeners and health checks. Off: none of it. With a certificate it is refused.
 */
import { Template } from 'aws-cdk-lib/assertions';
import { describe, expect, it } from 'vitest';
import { RELAY_PORTS } from '../../infra/constructs/relay-service.js';
import type { RendezvousStack } from '../../infra/stack.js';
import { synthApp } from './cdk-app.js';

type Json = Record<string, unknown>;
const CERT = 'arn:aws:acm:us-east-1:123456789012:certificate/11111111-2222-3333-4444-555555555555';

function regionTemplate(context: Json): Template {
  const app = synthApp({ regions: 'us-east-1', ...context });
  return Template.fromStack(
    app.stacks.find((s: RendezvousStack) => s.region === 'us-east-1') as RendezvousStack,
  );
}

/** The ports the relay tasks' security group admits from the internet (inline and separate rules). */
function taskInternetIngress(t: Template): Array<[number, number]> {
  const groups = serviceNetwork(t).SecurityGroups as Array<{ 'Fn::GetAtt': [string, string] }>;
  const ids = new Set(groups.map((g) => g['Fn::GetAtt'][0]));
  const out: Array<[number, number]> = [];
  const open = (r: Json) => r.CidrIp === '0.0.0.0/0' || r.CidrIpv6 === '::/0';
  for (const [id, sg] of Object.entries(t.findResources('AWS::EC2::SecurityGroup')))
    if (ids.has(id))
      for (const r of ((sg.Properties as Json).SecurityGroupIngress as Json[] | undefined) ?? [])
        if (open(r)) out.push([Number(r.FromPort), Number(r.ToPort)]);
  for (const r of Object.values(t.findResources('AWS::EC2::SecurityGroupIngress'))) {
    const props = r.Properties as Json;
    const target = (props.GroupId as { 'Fn::GetAtt'?: [string, string] })['Fn::GetAtt']?.[0];
    if (target && ids.has(target) && open(props)) out.push([Number(props.FromPort), Number(props.ToPort)]);
  }
  return out;
}

/** The relay task's container environment, as a map. */
function relayEnv(t: Template): Record<string, unknown> {
  const [task] = Object.values(t.findResources('AWS::ECS::TaskDefinition'));
  if (!task) throw new Error('no task definition');
  const container = ((task.Properties as Json).ContainerDefinitions as Json[])[0] as Json;
  return Object.fromEntries(
    (container.Environment as Array<{ Name: string; Value: unknown }>).map((e) => [e.Name, e.Value]),
  );
}

function lookupEnv(t: Template): Record<string, unknown> {
  const fns = t.findResources('AWS::Lambda::Function');
  const [lookup] = Object.entries(fns).filter(([id]) => id.includes('Lookup') && !id.includes('Canary'));
  if (!lookup) throw new Error('no lookup function');
  return ((lookup[1].Properties as Json).Environment as { Variables: Record<string, unknown> }).Variables;
}

function serviceNetwork(t: Template): Json {
  const [svc] = Object.values(t.findResources('AWS::ECS::Service'));
  return (((svc as Json).Properties as Json).NetworkConfiguration as Json).AwsvpcConfiguration as Json;
}

/** Every IAM action any policy of the stack grants. */
function actions(t: Template): string[] {
  const all: string[] = [];
  for (const p of Object.values(t.findResources('AWS::IAM::Policy')))
    for (const s of ((p.Properties as Json).PolicyDocument as { Statement: Json[] }).Statement)
      all.push(...([] as string[]).concat(s.Action as string));
  return all;
}

describe('direct addressing on', () => {
  const t = regionTemplate({ relayDirect: 'true' });

  it('tasks get public IPs in the public subnets, admitting the internet on the generic port only', () => {
    const net = serviceNetwork(t);
    expect(net.AssignPublicIp).toBe('ENABLED');
    expect(taskInternetIngress(t)).toEqual([[RELAY_PORTS.generic, RELAY_PORTS.generic]]);
    // The subnets are the public ones (route to the internet gateway).
    const subnets = t.findResources('AWS::EC2::Subnet');
    for (const ref of net.Subnets as Array<{ Ref: string }>) {
      const tags =
        (((subnets[ref.Ref] as Json).Properties as Json).Tags as Array<{ Key: string; Value: string }>) ?? [];
      expect(tags.find((tag) => tag.Key === 'aws-cdk:subnet-type')?.Value).toBe('Public');
    }
  });

  it('the relay advertises its task public IP; the lookup names holders', () => {
    expect(relayEnv(t)).toMatchObject({
      RELAY_DIRECT_HOST: 'ecs-public-ip',
      RELAY_DIRECT_PORT: String(RELAY_PORTS.generic),
    });
    expect(lookupEnv(t)).toMatchObject({ RENDEZVOUS_LOOKUP_DIRECT: 'on' });
    expect(actions(t)).toContain('ec2:DescribeNetworkInterfaces');
    expect(actions(t)).toContain('dynamodb:Query');
  });

  it('the NLB keeps its listeners and health checks', () => {
    t.resourceCountIs('AWS::ElasticLoadBalancingV2::LoadBalancer', 1);
    for (const g of Object.values(t.findResources('AWS::ElasticLoadBalancingV2::TargetGroup')))
      expect((g.Properties as Json).HealthCheckPort).toBe(String(RELAY_PORTS.health));
  });
});

describe('direct addressing off (the default)', () => {
  const t = regionTemplate({});

  it('tasks stay private; nothing is advertised or named', () => {
    expect(serviceNetwork(t).AssignPublicIp).toBe('DISABLED');
    expect(taskInternetIngress(t)).toEqual([]);
    expect(relayEnv(t).RELAY_DIRECT_HOST).toBeUndefined();
    expect(lookupEnv(t).RENDEZVOUS_LOOKUP_DIRECT).toBeUndefined();
    expect(actions(t)).not.toContain('ec2:DescribeNetworkInterfaces');
  });
});

describe('direct addressing with a certificate', () => {
  it('is refused at synth: every triple is TLS and names the relay domain', () => {
    expect(() =>
      regionTemplate({ relayDirect: 'true', certificateArn: CERT, relayDomain: 'relay.example.com' }),
    ).toThrow(/relayDirect/);
  });
});
