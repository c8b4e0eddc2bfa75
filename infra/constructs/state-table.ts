/**
 * The one DynamoDB table (`pk`/`sk`, TTL on `expiresAt`). The rollout's first region owns it as a
 * global table with a replica in every other region; every region's stack grants against its
 * local replica by the table's (fixed) name. Grants name exact actions, never `dynamodb:*`.
 */
import { RemovalPolicy, Stack } from 'aws-cdk-lib';
import { AttributeType, Billing, TableV2 } from 'aws-cdk-lib/aws-dynamodb';
import { Grant, type IGrantable } from 'aws-cdk-lib/aws-iam';
import { Construct } from 'constructs';

/** Data-plane actions a component may be granted. */
export type TableAction = 'GetItem' | 'PutItem' | 'UpdateItem' | 'DeleteItem' | 'Query';

/** Props of the state table. */
export interface StateTableProps {
  tableName: string;
  /** True in the region that owns the global table. */
  owner: boolean;
  /** Regions that get a replica (owner only). */
  replicaRegions: string[];
}

/** The state table of one region. */
export class StateTable extends Construct {
  readonly tableName: string;
  /** ARN of the table (or replica) in this stack's region. */
  readonly tableArn: string;
  /** The global table resource, in the owning region only. */
  readonly table?: TableV2;

  constructor(scope: Construct, id: string, props: StateTableProps) {
    super(scope, id);
    this.tableName = props.tableName;
    if (props.owner) {
      this.table = new TableV2(this, 'Table', {
        tableName: props.tableName,
        partitionKey: { name: 'pk', type: AttributeType.STRING },
        sortKey: { name: 'sk', type: AttributeType.STRING },
        billing: Billing.onDemand(),
        timeToLiveAttribute: 'expiresAt',
        pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
        deletionProtection: true,
        // Identities and their secrets live here: never deleted with the stack.
        removalPolicy: RemovalPolicy.RETAIN,
        replicas: props.replicaRegions.map((region) => ({ region })),
      });
    }
    this.tableArn = Stack.of(this).formatArn({
      service: 'dynamodb',
      resource: 'table',
      resourceName: props.tableName,
    });
  }

  /** Grants exactly `actions` on this region's table to `grantee`. */
  grant(grantee: IGrantable, actions: TableAction[]): Grant {
    return Grant.addToPrincipal({
      grantee,
      actions: actions.map((a) => `dynamodb:${a}`),
      resourceArns: [this.tableArn],
    });
  }
}
