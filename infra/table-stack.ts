/**
 * The state table's own stack, in the rollout's first region: the global table and nothing
 * else. Service stacks depend on it and only name the table, so a failed or rolled-back service
 * stack never touches the table, a retry finds it in place, and any region's service stack can
 * be deployed (or rolled out) first.
 */
import { CfnOutput, Stack, type StackProps } from 'aws-cdk-lib';
import type { Construct } from 'constructs';
import { GlobalStateTable } from './constructs/state-table.js';

/** What the table stack is told by the app. */
export interface TableStackProps extends StackProps {
  tableName: string;
  /** Replica regions besides the stack's own. */
  replicaRegions: string[];
  /** Replicas without deletion protection: regions leaving (context `retiringRegions`). */
  unprotectedReplicas?: string[];
}

/** The global table's stack. */
export class TableStack extends Stack {
  readonly state: GlobalStateTable;

  constructor(scope: Construct, id: string, props: TableStackProps) {
    super(scope, id, props);
    this.state = new GlobalStateTable(this, 'State', {
      tableName: props.tableName,
      replicaRegions: props.replicaRegions,
      unprotectedReplicas: props.unprotectedReplicas,
    });
    new CfnOutput(this, 'TableName', {
      value: props.tableName,
      description: 'RENDEZVOUS_TABLE for provision',
    });
  }
}
