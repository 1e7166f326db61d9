//! Issuing flavors from templates with the capacity that is left, and caching
//! their signatures so that listing costs no signing while nothing changes.

use std::collections::BTreeMap;

use fluidos_contracts::{
    Characteristics, Flavor, FlavorId, NodeId, Resources, SecretKey, Signed, Timestamp, Verified,
};

use super::FlavorTemplate;

/// One template's latest issue.
#[derive(Debug)]
struct Issued {
    flavor: Flavor,
    signed: Option<Verified<Flavor>>,
}

/// The flavors issued so far, by template.
#[derive(Debug)]
pub(super) struct FlavorCache {
    issued: BTreeMap<FlavorId, Issued>,
    next_revision: u64,
}

impl FlavorCache {
    /// Revisions start at `now * 1024`, so that a restarted ledger issues higher
    /// revisions than it did before (unless it re-issued more than 1024 times a
    /// millisecond, which listing cannot cause: issuing happens only on change).
    pub(super) fn new(now: Timestamp) -> Self {
        Self {
            issued: BTreeMap::new(),
            next_revision: now.0.saturating_mul(1024).max(1),
        }
    }

    /// Forgets a template's issue (after the template changed).
    pub(super) fn forget(&mut self, id: &FlavorId) {
        self.issued.remove(id);
    }

    /// The flavor of `template` as it should be offered at `now` with `remaining`
    /// capacity, re-issued (new revision) when its quantities changed or half of
    /// its validity has passed.
    pub(super) fn current(
        &mut self,
        owner: NodeId,
        template: &FlavorTemplate,
        capacity: &Resources,
        remaining: &Resources,
        flavor_ttl_ms: u64,
        now: Timestamp,
    ) -> &Flavor {
        let offered = offered(template, remaining);
        // The price is for the template's full size, not for what is left, so a
        // partition costs the same whatever was sold before.
        let reference = template.max.unwrap_or(*capacity);
        let stale = match self.issued.get(&template.id) {
            None => true,
            Some(i) => {
                i.flavor.characteristics.resources != offered
                    || i.flavor.price_basis != reference
                    || i.flavor.valid_until <= now.plus_ms(flavor_ttl_ms / 2)
            }
        };
        if stale {
            let revision = self.next_revision;
            self.next_revision += 1;
            let mut valid_until = now.plus_ms(flavor_ttl_ms.max(1));
            if let Some(end) = template.not_after {
                valid_until = valid_until.min(end);
            }
            let flavor = Flavor {
                id: template.id,
                owner,
                characteristics: Characteristics {
                    resources: offered,
                    architecture: template.architecture.clone(),
                    gpu: template.gpu.clone(),
                },
                properties: template.properties.clone(),
                policy: template.policy.clone(),
                price: template.price.clone(),
                price_basis: reference,
                valid_until,
                revision,
            };
            self.issued.insert(
                template.id,
                Issued {
                    flavor,
                    signed: None,
                },
            );
        }
        // Present: inserted above when missing.
        &self.issued[&template.id].flavor
    }

    /// The signed form of the current issue of `id` (see [`Self::current`], which
    /// must have been called first), signing it on first use.
    pub(super) fn signed(&mut self, id: &FlavorId, key: &SecretKey) -> Option<Verified<Flavor>> {
        let issued = self.issued.get_mut(id)?;
        if issued.signed.is_none() {
            match Signed::sign(issued.flavor.clone(), key) {
                Ok(v) => issued.signed = Some(v),
                Err(error) => {
                    tracing::error!(flavor_id = %id, %error, "cannot sign flavor");
                    return None;
                }
            }
        }
        issued.signed.clone()
    }
}

/// What a template offers out of `remaining`: per resource the smaller of the two,
/// and nothing of what its `max` excludes.
pub(super) fn offered(template: &FlavorTemplate, remaining: &Resources) -> Resources {
    match &template.max {
        None => *remaining,
        Some(max) => {
            let (m, r) = (max.as_array(), remaining.as_array());
            Resources::from_array(std::array::from_fn(|i| m[i].min(r[i])))
        }
    }
}
