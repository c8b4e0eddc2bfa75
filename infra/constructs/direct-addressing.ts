/**
 * Direct addressing of relay tasks (opt-in, `-c relayDirect=true`; the argument is in
 * docs/deploy.md): each task gets a public IPv4 in a public subnet and advertises it in its park
 * records, so the look-up names the task holding a hidden server and the mobile client pairs there
 * without a peer hop. The NLB stays the way in for parking, the HTTP-specific protocol, and
 * clients that cannot be directed (or whose named task is gone).
 */
import { type ISecurityGroup, Peer, Port, SubnetType } from 'aws-cdk-lib/aws-ec2';
import { type IRole, PolicyStatement } from 'aws-cdk-lib/aws-iam';
import { NagSuppressions } from 'cdk-nag';

/** The relay's environment for direct addressing: its task public IPv4 (read at start) and generic port. */
export function directEnvironment(on: boolean, genericPort: number): Record<string, string> {
  return on ? { RELAY_DIRECT_HOST: 'ecs-public-ip', RELAY_DIRECT_PORT: String(genericPort) } : {};
}

/**
 * Where the service's tasks run: public subnets with a public IPv4 each (egress then goes through
 * the internet gateway, not the NAT gateways), else the private subnets.
 */
export function directPlacement(on: boolean) {
  return {
    vpcSubnets: { subnetType: on ? SubnetType.PUBLIC : SubnetType.PRIVATE_WITH_EGRESS },
    assignPublicIp: on,
  };
}

/**
 * Opens the tasks' generic port to the internet and lets the task role read its public IPv4.
 * Only the generic port: the HTTP-specific protocol has no look-up (clients use the NLB's name and
 * its certificate), the peer port is for relay tasks, the health port tells load figures.
 */
export function openDirect(securityGroup: ISecurityGroup, taskRole: IRole, genericPort: number): void {
  securityGroup.addIngressRule(
    Peer.anyIpv4(),
    Port.tcp(genericPort),
    'generic protocol, direct (look-ups name the task holding the hidden server)',
  );
  // relay/ecs-public-ip.ts: a read-only call that takes no resource-level scope.
  taskRole.addToPrincipalPolicy(
    new PolicyStatement({ actions: ['ec2:DescribeNetworkInterfaces'], resources: ['*'] }),
  );
  NagSuppressions.addResourceSuppressions(securityGroup, [
    {
      id: 'AwsSolutions-EC23',
      reason:
        'Direct addressing (opt-in): mobile clients the look-up names a task reach its generic port from anywhere, as they reach the NLB; that one port only.',
    },
  ]);
}
